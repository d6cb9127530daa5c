"""The sandbox jail: every OS layer a sandbox process is put into, for every language."""
