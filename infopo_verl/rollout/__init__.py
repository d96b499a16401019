"""The ``infopo_user`` multi-turn rollout: agent loop, action parsing, counterfactual scoring, output layout."""
