"""``infopo-verl report``: the paper's analysis figures and a per-dialogue credit view, from a user's own runs.

- :mod:`~infopo_verl.report.logs`: what verl's ``file`` logger wrote, read back with bad lines counted;
- :mod:`~infopo_verl.report.summary`: the curves and the summary table;
- :mod:`~infopo_verl.report.figures`: the PNG figures (matplotlib, the ``report`` extra, imported lazily);
- :mod:`~infopo_verl.report.html`: the self-contained pages, every text escaped;
- :mod:`~infopo_verl.report.dialogues`: verl's rollout dumps as per-step credit pages;
- :mod:`~infopo_verl.report.record`: the per-turn record in ``reward_extra_info`` and the dump (no verl import);
- :mod:`~infopo_verl.report.dump`: the v1 trainer's rollout dump with the reward columns;
- :mod:`~infopo_verl.report.command`: the command line.
"""
