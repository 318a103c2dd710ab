"""The product-tagging dashboard's AWS deployment as a CDK app (see infra/README section in the top README)."""
