"""The endpoint's clock (admin issue): `python -m pipeline endpoint autostop` every few minutes, and for a
real-time endpoint a business-hours start/stop, each as a one-off Fargate task of the dashboard image.

EventBridge Scheduler (not EventBridge rules) because it takes a time zone: "08:00 in Europe/Berlin"
stays right across daylight-saving changes.
"""

from __future__ import annotations

import json

from aws_cdk import Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_scheduler as scheduler
from constructs import Construct

from tagger_infra.config import InfraConfig
from tagger_infra.dashboard import CONTAINER, Dashboard
from tagger_infra.network import Network


class EndpointSchedules(Construct):
    def __init__(self, scope: Construct, construct_id: str, config: InfraConfig, *, dashboard: Dashboard, network: Network) -> None:
        super().__init__(scope, construct_id)
        task = dashboard.task_definition
        family_arn = Stack.of(self).format_arn(service="ecs", resource="task-definition", resource_name=f"{task.family}:*")
        self.role = iam.Role(self, "Role", assumed_by=iam.ServicePrincipal("scheduler.amazonaws.com"),
                             description="EventBridge Scheduler: run the endpoint start/stop/autostop task")
        self.role.add_to_policy(iam.PolicyStatement(actions=["ecs:RunTask"], resources=[family_arn],
                                                    conditions={"ArnEquals": {"ecs:cluster": dashboard.cluster.cluster_arn}}))
        self.role.add_to_policy(iam.PolicyStatement(actions=["iam:PassRole"], resources=[task.task_role.role_arn, task.execution_role.role_arn],
                                                    conditions={"StringLike": {"iam:PassedToService": "ecs-tasks.amazonaws.com"}}))
        self._network = scheduler.CfnSchedule.NetworkConfigurationProperty(awsvpc_configuration=scheduler.CfnSchedule.AwsVpcConfigurationProperty(
            subnets=network.vpc.select_subnets(subnet_type=network.task_subnets.subnet_type).subnet_ids,
            security_groups=[dashboard.task_security_group.security_group_id],
            assign_public_ip="ENABLED" if network.tasks_get_public_ip else "DISABLED"))
        self._dashboard, self._tz = dashboard, config.business_hours.timezone
        self.schedules = {"autostop": self._schedule("Autostop", f"rate({config.autostop_every_minutes} minutes)", ["autostop", "--idle-minutes", str(config.autostop_idle_minutes)])}
        hours = config.business_hours
        if hours.enabled and not config.async_inference:
            self.schedules["start"] = self._schedule("BusinessHoursStart", hours.cron(hours.start), ["start"])
            self.schedules["stop"] = self._schedule("BusinessHoursStop", hours.cron(hours.stop), ["stop"])

    def _schedule(self, construct_id: str, expression: str, action: list[str]) -> scheduler.CfnSchedule:
        overrides = {"containerOverrides": [{"name": CONTAINER, "command": ["python", "-m", "pipeline", "endpoint", *action]}]}
        return scheduler.CfnSchedule(
            self, construct_id, schedule_expression=expression, schedule_expression_timezone=self._tz,
            flexible_time_window=scheduler.CfnSchedule.FlexibleTimeWindowProperty(mode="OFF"),
            target=scheduler.CfnSchedule.TargetProperty(
                arn=self._dashboard.cluster.cluster_arn, role_arn=self.role.role_arn, input=json.dumps(overrides),
                retry_policy=scheduler.CfnSchedule.RetryPolicyProperty(maximum_retry_attempts=2, maximum_event_age_in_seconds=600),
                ecs_parameters=scheduler.CfnSchedule.EcsParametersProperty(
                    task_definition_arn=self._dashboard.task_definition.task_definition_arn, task_count=1, launch_type="FARGATE",
                    network_configuration=self._network)))
