"""Save, load and share whole models: a folder or a Hugging Face Hub repository.

A saved model is three files:

* ``model.safetensors``: every tensor of ``model.state_dict()``;
* ``config.json``: the registry name, every constructor argument, the unetzoo version, a
  ``format_version``, the preprocessing and the pretrained weights the model started from;
* ``README.md``: a model card with a Hub metadata header and a usage snippet.

Reloading rebuilds the architecture with ``unetzoo.create(name, pretrained=False, ...)`` (so it
never downloads encoder weights) and loads the tensors strictly. Downloads, uploads and the
cache go through ``huggingface_hub``; ``HF_ENDPOINT``, ``HF_HOME`` and ``HF_HUB_OFFLINE`` are
read when a function is called, not only when ``huggingface_hub`` is imported.

    >>> model.save_pretrained("out/")
    >>> same = unetzoo.from_pretrained("out/")            # or "org/name" on the Hub
    >>> model.push_to_hub("org/name")
"""

from unetzoo.hub.load import from_pretrained, read_config
from unetzoo.hub.save import CARD_NAME, CONFIG_NAME, FORMAT_VERSION, WEIGHTS_NAME, save_pretrained
from unetzoo.hub.share import pull, push_folder, push_to_hub

__all__ = [
    "CARD_NAME",
    "CONFIG_NAME",
    "FORMAT_VERSION",
    "WEIGHTS_NAME",
    "from_pretrained",
    "pull",
    "push_folder",
    "push_to_hub",
    "read_config",
    "save_pretrained",
]
