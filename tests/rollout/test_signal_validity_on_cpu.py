"""The premise of InfoPO, measured: r_t is large when the user's feedback changes the next action.

The same clarify tasks are rolled out twice through verl's workers with the tiny model trained on the spot
(cached under .cache/), once with the informative scripted user ("The cuisine is thai.") and once with an
uninformative one ("I don't know."). Only the replies differ. The informative replies must carry clearly more
information gain than the uninformative ones, which are no more informative than the placeholder itself.
"""

from __future__ import annotations

from infopo_verl.local.tiny import trained_model
from infopo_verl.local.validity import informative_vs_uninformative


def test_informative_feedback_has_clearly_higher_information_gain():
    result = informative_vs_uninformative(trained_model(), prompts=4, rollouts=3, seed=0)
    assert len(result.informative) >= 10 and len(result.uninformative) >= 10
    # Measured: +0.179 against -0.002 (4 tasks x 3 rollouts, seed 0). The bounds leave room for another CPU's
    # floating-point order, not for a signal that is gone.
    assert result.informative_mean > 0.05
    assert result.informative_mean > 5 * max(result.uninformative_mean, 0.0)
    assert result.informative_mean - result.uninformative_mean > 0.05
