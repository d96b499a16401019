"""CPU stand-ins for what a GPU run gets from the hub and from vLLM: a tiny Qwen2-style model and tokenizer built from
code (:mod:`infopo_verl.local.tiny`) and an in-process inference server (:mod:`infopo_verl.local.server`).

Used by the CPU tests and the CPU demo; a real run never imports this package.
"""
