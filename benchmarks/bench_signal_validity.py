"""Is r_t large when the feedback changes the next action? Informative versus uninformative users.

The method rests on it: the information gain of a turn should be clearly higher when the user's answer carries
the missing detail ("The cuisine is thai.") than when it carries none ("I don't know."). This script rolls out
the same clarify tasks twice with the tiny model trained on the spot (whose final answer copies what the user
said), once with the informative scripted user and once with the uninformative one, through verl's workers on
the CPU (agent temperature 0.5, see ``infopo_verl/local/validity.py``), and prints the mean r_t of each, their
difference and their ratio.

    .venv/bin/python benchmarks/bench_signal_validity.py [--prompts 6] [--rollouts 3]
"""

from __future__ import annotations

import argparse

from infopo_verl.local.tiny import trained_model
from infopo_verl.local.validity import informative_vs_uninformative


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=6)
    parser.add_argument("--rollouts", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    result = informative_vs_uninformative(trained_model(), args.prompts, args.rollouts, seed=args.seed)
    print(f"informative user:   mean r_t = {result.informative_mean:+.4f} over {len(result.informative)} turns")
    print(f"uninformative user: mean r_t = {result.uninformative_mean:+.4f} over {len(result.uninformative)} turns")
    print(f"difference = {result.informative_mean - result.uninformative_mean:+.4f}, "
          f"ratio informative / uninformative = {result.ratio:.1f}, Welch t = {result.welch_t:.1f}")
    print(f"medians: informative {result.informative_median:+.4f}, uninformative {result.uninformative_median:+.4f}")


if __name__ == "__main__":
    main()
