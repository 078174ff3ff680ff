"""`synth view`: one self-contained HTML report of a run directory (the top layer: nothing imports it).

It reads the run directory as raw JSON, not through the pipeline's record classes, so it reads run
directories of older versions and fields added later (unknown ones are shown generically).
"""
