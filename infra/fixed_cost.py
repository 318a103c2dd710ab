#!/usr/bin/env python3
"""The deployment's always-on monthly cost, from cdk.json's context through the app's own estimator.

    .venv/bin/python infra/fixed_cost.py [--profile NAME] [-c '{"network": "private-nat"}']     (docs/deploy.md shows each profile)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pipeline.admin.costs import PriceTable, fixed_infra_costs
from tagger_infra.config import CONTEXT_KEY, PROFILES, InfraConfig, InfraConfigError  # infra/ is the script's folder, on sys.path

HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-c", "--context", default="{}", help="JSON overrides of cdk.json's product-tagging block")
    parser.add_argument("--profile", choices=list(PROFILES), help="a deployment profile over cdk.json (as `cdk deploy -c profile=`)")
    args = parser.parse_args()
    block = json.loads((HERE / "cdk.json").read_text())["context"][CONTEXT_KEY]
    try:
        config = InfraConfig.from_context({**block, **json.loads(args.context)}, profile=args.profile)
    except InfraConfigError as error:
        print(error, file=sys.stderr)
        return 2
    costs = fixed_infra_costs(config.cost_assumptions(), PriceTable.load())
    print("| Component | USD / month |\n|---|---|")
    for component, usd in costs.items():
        print(f"| `{component}` | {usd:,.2f} |")
    print(f"| **total** | **{sum(costs.values()):,.2f}** |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
