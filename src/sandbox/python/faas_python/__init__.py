"""The Python runtime inside its jail: a zygote per slot that forks each run."""
