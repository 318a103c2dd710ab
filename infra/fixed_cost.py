#!/usr/bin/env python3
"""The deployment's always-on monthly cost, from cdk.json's context through the app's own estimator.

    .venv/bin/python infra/fixed_cost.py [-c '{"network": "private-nat"}']     (README "Deploy" shows the default)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(1, str(HERE))  # tagger_infra, after the script's own folder and before nothing else

from pipeline.costs import PriceTable, fixed_infra_costs  # noqa: E402
from tagger_infra.config import CONTEXT_KEY, InfraConfig, InfraConfigError  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-c", "--context", default="{}", help="JSON overrides of cdk.json's product-tagging block")
    args = parser.parse_args()
    block = json.loads((HERE / "cdk.json").read_text())["context"][CONTEXT_KEY]
    try:
        config = InfraConfig.from_context({**block, **json.loads(args.context)})
    except InfraConfigError as error:
        print(error, file=sys.stderr)
        return 2
    costs = fixed_infra_costs(config.cost_assumptions(), PriceTable.load())
    print("| Component | USD / month |\n|---|---|")
    for component, usd in costs.items():
        if usd:
            print(f"| `{component}` | {usd:,.2f} |")
    print(f"| **total** | **{sum(costs.values()):,.2f}** |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
