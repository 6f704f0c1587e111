"""The base of every command's flags: a typed model whose field docstrings are the help, which
pydantic-settings (the one command-line parser, see :mod:`rlrings.ops.cli`) turns into flags."""

from __future__ import annotations

import pydantic


class Flags(pydantic.BaseModel):
    """Base of the flags of the command line's commands: each field's docstring is its help."""

    model_config = pydantic.ConfigDict(use_attribute_docstrings=True, extra="forbid")


def subcommand(model: type[Flags]):
    """A subcommand's field, whose one-line help is the first line of the model's docstring."""
    return pydantic.Field(description=(model.__doc__ or "").strip().splitlines()[0].rstrip("."))
