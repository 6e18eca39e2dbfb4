"""What a checkpoint says, as plain data (``facts.py``) and as a pydantic model (``model.py``).

``facts.collect`` gives the summary as dicts and lists (the CLI and the catalog use it,
without pydantic); ``model.summarize`` validates the same data into ``CheckpointSummary``,
and is the only place pydantic is imported (on the first ``Checkpoint.summary()``).

Import rule: ``summary`` imports the tensor model, ``ckptpeek.walk`` and
``ckptpeek.unpickle``'s stand-ins; never ``Checkpoint`` at run time (facts read a
checkpoint through its public attributes), ``formats`` or the catalog.
"""

from .facts import collect, to_jsonable

__all__ = ("collect", "to_jsonable")
