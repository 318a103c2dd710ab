"""Alarms a small team acts on, and an AWS Budgets alert: all to one SNS topic (+ e-mail when configured)."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_budgets as budgets
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct

from pipeline.admin.endpoint import VARIANT
from tagger_infra.checks import accept_findings
from tagger_infra.config import InfraConfig
from tagger_infra.dashboard import Dashboard

GREATER = cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD


class Monitoring(Construct):
    def __init__(self, scope: Construct, construct_id: str, config: InfraConfig, *, dashboard: Dashboard) -> None:
        super().__init__(scope, construct_id)
        self.topic = sns.Topic(self, "Alerts", display_name=f"{config.app_name} alerts", enforce_ssl=True)
        accept_findings(self.topic, {
            "CKV_AWS_26": "CloudWatch alarms and AWS Budgets cannot publish to a topic under the AWS-managed SNS key; the "
                          "messages are alarm names and dollar figures.",
        })
        self.topic.add_to_resource_policy(iam.PolicyStatement(
            actions=["sns:Publish"], principals=[iam.ServicePrincipal("budgets.amazonaws.com")], resources=[self.topic.topic_arn]))
        if config.alarm_email:
            self.topic.add_subscription(subscriptions.EmailSubscription(config.alarm_email))
        endpoint = {"EndpointName": config.endpoint_name, "VariantName": VARIANT}
        lb = dashboard.load_balancer
        alarms = {
            "alb-5xx": (lb.metrics.http_code_target(elbv2.HttpCodeTarget.TARGET_5XX_COUNT, period=Duration.minutes(5), statistic="Sum"), 5, 1,
                        "The dashboard answered 5 or more server errors in 5 minutes."),
            "unhealthy-tasks": (dashboard.target_group.metrics.unhealthy_host_count(period=Duration.minutes(1), statistic="Maximum"), 1, 5,
                                "A dashboard task failed its health check for 5 minutes."),
            "dashboard-cpu-high": (dashboard.service.metric_cpu_utilization(period=Duration.minutes(5)), 85, 3,
                                   "Dashboard CPU above 85% for 15 minutes (autoscaling is at its maximum?)."),
            "endpoint-model-errors": (cloudwatch.Metric(namespace="AWS/SageMaker", metric_name="Invocation5XXErrors", dimensions_map=endpoint,
                                                        period=Duration.minutes(5), statistic="Sum"), 3, 1,
                                      "The captioning endpoint returned 3 or more errors in 5 minutes."),
            # Instance metrics exist only while an instance runs: 12 hourly samples in a row = running 12 h+.
            "endpoint-running-long": (cloudwatch.Metric(namespace="/aws/sagemaker/Endpoints", metric_name="GPUMemoryUtilization",
                                                        dimensions_map=endpoint, period=Duration.hours(1), statistic="SampleCount"), 1, 12,
                                      "The GPU endpoint has been running for 12 hours: is auto-stop working?"),
        }
        if config.async_inference:
            alarms["async-backlog-stuck"] = (cloudwatch.Metric(namespace="AWS/SageMaker", metric_name="ApproximateBacklogSize",
                                                               dimensions_map={"EndpointName": config.endpoint_name},
                                                               period=Duration.minutes(5), statistic="Minimum"), 1, 12,
                                             "Async requests have been waiting for an hour.")
        self.alarms = {}
        for name, (metric, threshold, periods, description) in alarms.items():
            alarm = cloudwatch.Alarm(self, name, alarm_name=f"{config.app_name}-{name}", metric=metric, threshold=threshold,
                                     evaluation_periods=periods, comparison_operator=GREATER, alarm_description=description,
                                     treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING)
            alarm.add_alarm_action(actions.SnsAction(self.topic))
            self.alarms[name] = alarm
        self.budget = budgets.CfnBudget(
            self, "Budget",
            budget=budgets.CfnBudget.BudgetDataProperty(
                budget_name=f"{config.app_name}-monthly", budget_type="COST", time_unit="MONTHLY",
                budget_limit=budgets.CfnBudget.SpendProperty(amount=config.monthly_budget_usd, unit="USD")),
            notifications_with_subscribers=[
                _budget_notice("ACTUAL", 80, self.topic.topic_arn, config.alarm_email),
                _budget_notice("FORECASTED", 100, self.topic.topic_arn, config.alarm_email),
            ])


def _budget_notice(kind: str, percent: float, topic_arn: str, email: str | None) -> budgets.CfnBudget.NotificationWithSubscribersProperty:
    subscribers = [budgets.CfnBudget.SubscriberProperty(subscription_type="SNS", address=topic_arn)]
    if email:
        subscribers.append(budgets.CfnBudget.SubscriberProperty(subscription_type="EMAIL", address=email))
    return budgets.CfnBudget.NotificationWithSubscribersProperty(
        notification=budgets.CfnBudget.NotificationProperty(notification_type=kind, comparison_operator="GREATER_THAN",
                                                            threshold=percent, threshold_type="PERCENTAGE"),
        subscribers=subscribers)
