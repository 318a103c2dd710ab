#!/usr/bin/env python3
"""CDK entry point: `npx cdk synth|diff|deploy` from infra/ (cdk.json runs this). Config: cdk.json context."""

import sys

import aws_cdk as cdk

from tagger_infra.config import CONTEXT_KEY, InfraConfig, InfraConfigError
from tagger_infra.nag import add_checks
from tagger_infra.stacks import build


def main() -> None:
    app = cdk.App()
    try:
        # -c profile=<name>: a deployment profile (tagger_infra/config.py PROFILES) over cdk.json's block
        config = InfraConfig.from_context(app.node.try_get_context(CONTEXT_KEY), profile=app.node.try_get_context("profile"))
    except InfraConfigError as error:
        sys.exit(str(error))
    image_tag = app.node.try_get_context("image_tag")  # deploy-app.yml: -c image_tag=<commit SHA>
    if image_tag:
        config = config.model_copy(update={"image_tag": image_tag})
    build(app, config)
    add_checks(app)  # cdk-nag AwsSolutions: `cdk synth` fails on a finding not accepted in tagger_infra/nag.py
    app.synth()


if __name__ == "__main__":
    main()
