"""The TM: the only package that changes what the kernel enforces."""
