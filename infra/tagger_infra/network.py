"""The VPC: cost first. Default: public subnets only, tasks get a public IP, no NAT gateway.

S3 and DynamoDB are reached through gateway endpoints (free, traffic stays in AWS) in every layout.
`private-nat` adds private subnets and one NAT gateway; `private-endpoints` adds isolated subnets and
interface endpoints for each AWS API the tasks call. Their prices: pipeline.admin.costs.fixed_infra_costs.

VPC flow logs are off by default (cdk.json `vpc_flow_logs`: "off" | "reject" | "all"). When on, they go
to a CloudWatch log group with the dashboard's retention: no fixed monthly charge (so the estimator's
fixed cost is unchanged) but $0.50/GB ingested plus storage, which a busy "all" adds up to.
"""

from __future__ import annotations

from aws_cdk import RemovalPolicy
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_logs as logs
from constructs import Construct

from tagger_infra.checks import accept_findings

from tagger_infra.config import InfraConfig
from tagger_infra.log_retention import log_retention


class Network(Construct):
    def __init__(self, scope: Construct, construct_id: str, config: InfraConfig) -> None:
        super().__init__(scope, construct_id)
        self.tasks_get_public_ip = config.tasks_get_public_ip
        if config.load_balancer == "shared":
            # The shared ALB's VPC (IP targets live in the load balancer's VPC): its routes, endpoints and flow logs
            # are its owner's; the tasks run in the subnets named in shared_alb.
            shared = config.shared_alb
            self.vpc = ec2.Vpc.from_vpc_attributes(self, "Vpc", vpc_id=shared.vpc_id, availability_zones=shared.availability_zones,
                                                   public_subnet_ids=shared.task_subnet_ids)
            self.task_subnets = ec2.SubnetSelection(subnet_type=ec2.SubnetType.PUBLIC)
            self.interface_endpoints, self.flow_log, self.imported = [], None, True
            return
        self.imported = False
        subnets = [ec2.SubnetConfiguration(name="public", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=24, map_public_ip_on_launch=False)]
        if config.network == "private-nat":
            subnets.append(ec2.SubnetConfiguration(name="app", subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS, cidr_mask=22))
        elif config.network == "private-endpoints":
            subnets.append(ec2.SubnetConfiguration(name="app", subnet_type=ec2.SubnetType.PRIVATE_ISOLATED, cidr_mask=22))
        self.vpc = ec2.Vpc(
            self, "Vpc", max_azs=config.max_azs, nat_gateways=config.nat_gateways, subnet_configuration=subnets,
            # own-dualstack: an Amazon IPv6 block on every subnet, for an ALB without public IPv4 addresses
            ip_protocol=ec2.IpProtocol.DUAL_STACK if config.load_balancer == "own-dualstack" else ec2.IpProtocol.IPV4_ONLY,
            gateway_endpoints={
                "S3": ec2.GatewayVpcEndpointOptions(service=ec2.GatewayVpcEndpointAwsService.S3),
                "DynamoDB": ec2.GatewayVpcEndpointOptions(service=ec2.GatewayVpcEndpointAwsService.DYNAMODB),
            },
            restrict_default_security_group=False,  # nothing uses the default SG; see checkov skip CKV2_AWS_12
        )
        self.task_subnets = ec2.SubnetSelection(
            subnet_type=ec2.SubnetType.PUBLIC if config.network == "public"
            else ec2.SubnetType.PRIVATE_WITH_EGRESS if config.network == "private-nat" else ec2.SubnetType.PRIVATE_ISOLATED)
        self.interface_endpoints = [
            self.vpc.add_interface_endpoint(
                f"Endpoint-{service.replace('.', '-')}", service=ec2.InterfaceVpcEndpointAwsService(service),
                subnets=self.task_subnets, private_dns_enabled=True)
            for service in config.interface_endpoints]
        self.flow_log = self._flow_log(config) if config.vpc_flow_logs != "off" else None

    def _flow_log(self, config: InfraConfig) -> ec2.FlowLog:

        group = logs.LogGroup(self, "FlowLogs", retention=log_retention(config.log_retention_days), removal_policy=RemovalPolicy.DESTROY)
        accept_findings(group, {
            "CKV_AWS_158": "CloudWatch encrypts log data at rest by default; flow records hold addresses and ports, and a "
                           "customer key would cost more than the logs.",
        })
        traffic = ec2.FlowLogTrafficType.REJECT if config.vpc_flow_logs == "reject" else ec2.FlowLogTrafficType.ALL
        return self.vpc.add_flow_log("FlowLog", destination=ec2.FlowLogDestination.to_cloud_watch_logs(group), traffic_type=traffic)
