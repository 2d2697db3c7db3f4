"""The ``naila`` command: one entry point dispatching to each deployable."""
