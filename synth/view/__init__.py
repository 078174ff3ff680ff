"""`synth view`: one self-contained HTML report of a run directory (the top layer: only cli.py imports it).

It reads the run directory as raw JSON, not through the pipeline's record classes, so it reads run
directories of older versions and fields added later (unknown ones are shown generically); it
imports nothing of the project outside itself, so modules of the pipeline can move under it.
"""
