"""Alarms a small team acts on, and an AWS Budgets alert: all to one SNS topic (+ e-mail when configured).
`PipelineMonitoring`: alarms and a CloudWatch dashboard on the pipeline's own metrics, which the dashboard
tasks write as Embedded Metric Format lines (pipeline/observability/metrics.py, METRICS_FORMAT=emf)."""

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
from pipeline.observability import metrics as m
from pipeline.observability.trace import STAGES
from tagger_infra.checks import accept_findings
from tagger_infra.config import ENDPOINT_ALARMS, PIPELINE_ALARMS, InfraConfig
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
        if not config.realtime_endpoint:  # no endpoint: nothing to watch there (transform jobs report in the app)
            for name in ENDPOINT_ALARMS:
                del alarms[name]
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
        self.pipeline = PipelineMonitoring(self, "Pipeline", config, topic=self.topic) if config.pipeline_monitoring else None
        if self.pipeline is not None:
            self.alarms.update(self.pipeline.alarms)
        assert tuple(self.alarms) == config.alarm_names  # what InfraConfig.cost_assumptions counts
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


def metrics_namespace(config: InfraConfig) -> str:
    """The CloudWatch namespace the tasks write to (their METRICS_NAMESPACE) and the alarms read."""
    return config.app_name


# Item failure rate: alarm at 20 % or more of the items finished in 5 minutes (with at least 5 of them),
# in 2 of 3 periods. Caption latency: alarm when p95 stays above the threshold for 3 periods of 5 minutes
# (a real-time endpoint answers in seconds; an async one queues and may scale from zero: minutes).
FAILURE_RATE_PERCENT = 20
FAILURE_RATE_MIN_ITEMS = 5
CAPTION_P95_MS = {"realtime": 15_000, "async": 600_000}


class PipelineMonitoring(Construct):
    """Alarms on the item failure rate and the p95 caption latency, to the alert topic, and a CloudWatch
    dashboard: throughput, failures by kind, p50 / p95 per stage, OpenAI tokens, cache hits, endpoint calls."""

    def __init__(self, scope: Construct, construct_id: str, config: InfraConfig, *, topic: sns.ITopic) -> None:
        super().__init__(scope, construct_id)
        ns, five = metrics_namespace(config), Duration.minutes(5)
        self.namespace = ns

        def metric(name: str, statistic: str = "Sum", label: str | None = None, **dimensions: str) -> cloudwatch.Metric:
            return cloudwatch.Metric(namespace=ns, metric_name=name, dimensions_map=dimensions or None, period=five,
                                     statistic=statistic, label=label)

        ok, failed = metric(m.ITEMS_OK, label="ok"), metric(m.ITEMS_FAILED, label="failed")
        self.failure_rate = cloudwatch.MathExpression(
            expression=(f"IF((FILL(ok, 0) + FILL(failed, 0)) >= {FAILURE_RATE_MIN_ITEMS}, "
                        "100 * FILL(failed, 0) / (FILL(ok, 0) + FILL(failed, 0)), 0)"),
            using_metrics={"ok": ok, "failed": failed}, period=five, label="items failed (%)")
        mode = "async" if config.async_inference else "realtime"
        self.caption_p95 = metric(m.STAGE_LATENCY, "p95", Stage="caption")
        self.alarms: dict[str, cloudwatch.Alarm] = {}
        watches = {
            "item-failure-rate": (self.failure_rate, FAILURE_RATE_PERCENT, 3, 2,
                                  f"{FAILURE_RATE_PERCENT}% or more of the items failed (at least {FAILURE_RATE_MIN_ITEMS} items in 5 "
                                  "minutes), twice in 15 minutes: see 'Failures by kind' on the pipeline dashboard."),
            "caption-latency-p95": (self.caption_p95, CAPTION_P95_MS[mode], 3, 3,
                                    f"95th percentile caption time above {CAPTION_P95_MS[mode] / 1000:g} s for 15 minutes "
                                    "(endpoint overloaded, scaled in, or cold?)."),
        }
        assert tuple(watches) == PIPELINE_ALARMS  # what InfraConfig.cost_assumptions counts
        for name, (watched, threshold, periods, to_alarm, description) in watches.items():
            alarm = cloudwatch.Alarm(self, name, alarm_name=f"{config.app_name}-{name}", metric=watched, threshold=threshold,
                                     evaluation_periods=periods, datapoints_to_alarm=to_alarm, comparison_operator=GREATER,
                                     alarm_description=description, treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING)
            alarm.add_alarm_action(actions.SnsAction(topic))
            self.alarms[name] = alarm

        def stages(statistic: str) -> list[cloudwatch.IMetric]:
            return [metric(m.STAGE_LATENCY, statistic, stage, Stage=stage) for stage in STAGES]

        by_kind = cloudwatch.MathExpression(
            expression=f"SEARCH('{{{ns},ErrorKind}} MetricName=\"{m.ITEMS_FAILED}\"', 'Sum', 300)",
            using_metrics={}, period=five, label="")
        half = 12  # of the dashboard's 24 columns
        self.dashboard = cloudwatch.Dashboard(self, "Dashboard", dashboard_name=f"{config.app_name}-pipeline", widgets=[
            [cloudwatch.GraphWidget(title="Throughput (items per 5 minutes)", left=[ok, failed], width=half, stacked=True),
             cloudwatch.GraphWidget(title="Failures by kind (error_kind)", left=[by_kind], width=half)],
            [cloudwatch.GraphWidget(title="Stage latency p50 (ms)", left=stages("p50"), width=half),
             cloudwatch.GraphWidget(title="Stage latency p95 (ms)", left=stages("p95"), width=half)],
            [cloudwatch.GraphWidget(title="OpenAI tokens", left=[metric(m.OPENAI_INPUT_TOKENS, label="input"),
                                                                 metric(m.OPENAI_OUTPUT_TOKENS, label="output")], width=half),
             cloudwatch.GraphWidget(title="Caption cache and endpoint calls",
                                    left=[metric(m.CAPTION_CACHE_HITS, label="cache hits"), metric(m.CAPTION_CACHE_MISSES, label="cache misses"),
                                          metric(m.ENDPOINT_INVOCATIONS, label="endpoint invocations")], width=half)],
            [cloudwatch.AlarmWidget(title="Item failure rate (%)", alarm=self.alarms["item-failure-rate"], width=half),
             cloudwatch.AlarmWidget(title="Caption latency p95 (ms)", alarm=self.alarms["caption-latency-p95"], width=half)],
        ])
