"""The pipeline's stages, one module each, every one `async def run(ctx) -> StageStats` (synth/run.py
runs them from its table)."""
