"""Dataset preparation: ``infopo-verl prepare`` (see :mod:`infopo_verl.data.prepare`)."""
