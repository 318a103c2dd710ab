"""The product-tagging dashboard's AWS deployment as a CDK app (see docs/deploy.md)."""
