"""UserGym task families (UserRL's gyms) behind the :class:`~infopo_verl.envs.base.Environment` interface.

One module per gym; :mod:`.common` holds the row format, the ``interact_with_env`` tool schema and the step
bookkeeping they share. Families (``extra_info.infopo.env``): ``function``, ``telepathy``, ``turtle``,
``persuade``, ``intention``, ``travel``, ``search`` and ``tau`` (which stops with an install hint: tau-bench is not
on PyPI). Only ``function`` has deterministic rules; the others need ``algorithm.infopo.user.backend`` set to
``openai`` or ``policy``. Rows come from ``infopo-verl prepare userrl``.
"""

FAMILY_BY_DATA_SOURCE = {
    "interact_function": "function",
    "interact_telepathygym": "telepathy",
    "interact_turtlegym": "turtle",
    "interact_persuade": "persuade",
    "interact_intention": "intention",
    "interact_travelgym": "travel",
    "interact_searchgym": "search",
    "interact_taugym": "tau",
}
"""UserRL's ``data_source`` column -> our family name."""
