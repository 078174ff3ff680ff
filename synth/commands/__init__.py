"""The `synth` command line's sub-apps and commands (cli.py assembles them). They parse options, call
the library and print; expected errors end a command through one `exit_on_errors` (common.py)."""
