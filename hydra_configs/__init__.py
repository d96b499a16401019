"""InfoPO's Hydra configs, shipped inside the wheel as ``infopo_verl.hydra_configs``.

The yaml files live in the repository's top-level ``hydra_configs/`` (where verl users look for them); setup.py maps
that folder onto this package name so that ``--config-path=pkg://infopo_verl.hydra_configs`` works from any
installation, editable or not. This module holds no code: Hydra only needs it to be an importable package.
"""
