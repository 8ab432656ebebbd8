# Beam's --setup_file wants a setup.py: this shim defers everything to pyproject.toml,
# so Dataflow / Flink / Spark workers install this package the same way users do.
from setuptools import setup

setup()
