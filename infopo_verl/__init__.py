"""infopo-verl: InfoPO (Information-Driven Policy Optimization for User-Centric Agents) for stock verl.

Importing this package is cheap and imports nothing from verl. Registration with verl happens in
:mod:`infopo_verl.plugin`, which verl loads itself through the ``verl.plugins`` entry point.
"""

from pathlib import Path

__version__ = (Path(__file__).parent / "VERSION").read_text().strip()
