"""Builds the optional C module (aiologship._logging._speedups); all metadata is
in pyproject.toml. Without a C compiler the build goes on without it and the
pure-Python path runs (``optional=True``)."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "aiologship._logging._speedups",
            ["aiologship/_logging/_speedups.c"],
            optional=True,
        )
    ]
)
