"""CloudWatch log retention from cdk.json's `log_retention_days`, shared by the dashboard's and the VPC's log groups."""

from __future__ import annotations

from aws_cdk import aws_logs as logs

RETENTION = {1: "ONE_DAY", 3: "THREE_DAYS", 5: "FIVE_DAYS", 7: "ONE_WEEK", 14: "TWO_WEEKS", 30: "ONE_MONTH", 60: "TWO_MONTHS",
             90: "THREE_MONTHS", 120: "FOUR_MONTHS", 150: "FIVE_MONTHS", 180: "SIX_MONTHS", 365: "ONE_YEAR", 400: "THIRTEEN_MONTHS",
             545: "EIGHTEEN_MONTHS", 731: "TWO_YEARS", 1827: "FIVE_YEARS", 3653: "TEN_YEARS"}


def log_retention(days: int) -> logs.RetentionDays:
    if days not in RETENTION:
        raise ValueError(f"log_retention_days {days} is not a CloudWatch retention: one of {sorted(RETENTION)}")
    return logs.RetentionDays[RETENTION[days]]
