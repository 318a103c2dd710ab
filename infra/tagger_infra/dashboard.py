"""The dashboard: Fargate service (ARM64) behind an HTTPS ALB that signs users in (Cognito or OIDC).

Streamlit keeps one WebSocket per browser tab, so: ALB (API Gateway HTTP APIs do not proxy WebSockets),
idle timeout well above Streamlit's pings, sticky sessions once there is more than one task.
"""

from __future__ import annotations

import json
from pathlib import Path

from aws_cdk import Duration, RemovalPolicy, SecretValue, Stack
from aws_cdk import aws_certificatemanager as acm
from aws_cdk import aws_cognito as cognito
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_elasticloadbalancingv2_actions as elbv2_actions
from aws_cdk import aws_elasticloadbalancingv2_targets as elbv2_targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_route53 as route53
from aws_cdk import aws_route53_targets as route53_targets
from aws_cdk import aws_scheduler as scheduler
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_ssm as ssm
from constructs import Construct

from tagger_infra.checks import accept_findings
from tagger_infra.config import InfraConfig
from tagger_infra.log_retention import log_retention
from tagger_infra.network import Network
from tagger_infra.permissions import Scope, dashboard_task_statements

CONTAINER = "dashboard"
PORT = 8501
WAKE_CODE = Path(__file__).resolve().parent / "wake"
OPEN_PATH = "/__open-until-0"  # the closed rule's parked path (wake/handler.py OPEN_PREFIX): open for business hours


class Dashboard(Construct):
    def __init__(self, scope: Construct, construct_id: str, config: InfraConfig, *, network: Network, repository: ecr.IRepository,
                 permissions: Scope, environment: dict[str, str]) -> None:
        super().__init__(scope, construct_id)
        self.config = config
        self.user_pool: cognito.UserPool | None = None  # with auth "cognito"
        # The OpenAI key: a secret this stack creates (filled after the first deploy), or a SecureString parameter the
        # operator created before it (openai_key_store ssm: CloudFormation cannot create SecureString parameters).
        self.openai_key: secretsmanager.Secret | None = None
        self.openai_key_parameter: ssm.IStringParameter | None = None
        if config.openai_key_store == "ssm":
            self.openai_key_parameter = ssm.StringParameter.from_secure_string_parameter_attributes(
                self, "OpenAiKeyParameter", parameter_name=config.openai_key_parameter_name)
        else:
            self.openai_key = secretsmanager.Secret(
                self, "OpenAiKey", description="OpenAI API key for summaries: put the real key here after the first deploy",
                removal_policy=RemovalPolicy.RETAIN)
            accept_findings(self.openai_key, {
                "CKV_AWS_149": "Encrypted with the AWS-managed key (aws/secretsmanager); only the task execution role can read it.",
                "CKV2_AWS_57": "Not rotated by AWS: it is an OpenAI key, rotated in OpenAI's console and pasted here.",
            })
        self.log_group = logs.LogGroup(self, "Logs", retention=log_retention(config.log_retention_days),
                                       removal_policy=RemovalPolicy.DESTROY)
        self.cluster = ecs.Cluster(self, "Cluster", vpc=network.vpc, enable_fargate_capacity_providers=True)
        accept_findings(self.log_group, {
            "CKV_AWS_158": "CloudWatch encrypts log data at rest by default; the app never logs secrets or photos, and a "
                           "customer key would cost more than the logs.",
        })
        accept_findings(self.cluster, {
            "CKV_AWS_65": "Container Insights is billed per metric; the alarms use the service metrics ECS publishes free.",
        })
        self.task_role = iam.Role(self, "TaskRole", assumed_by=iam.ServicePrincipal("ecs-tasks.amazonaws.com"),
                                  description="The product-tagging dashboard and its scheduled endpoint tasks",
                                  inline_policies={"app": iam.PolicyDocument(statements=dashboard_task_statements(permissions))})
        self.task_definition = self._task_definition(repository, environment)
        self.user_pool = None
        self._then_sign_in = self._identity()
        if config.load_balancer == "shared":
            self.alb_security_group, self.load_balancer, self.listener = self._shared_load_balancer(network)
        else:
            self.alb_security_group, self.load_balancer = self._load_balancer(network)
        self.task_security_group = ec2.SecurityGroup(self, "TaskSg", vpc=network.vpc, allow_all_outbound=True,
                                                     description="Dashboard tasks: only the ALB reaches port 8501")
        self.task_security_group.add_ingress_rule(self.alb_security_group, ec2.Port.tcp(PORT), "from the load balancer")
        self.service = self._service(network)
        accept_findings(self.task_role, {
            "CKV_AWS_111": "Only application-autoscaling:RegisterScalableTarget is unscoped: scalable-target ARNs carry an "
                           "id generated by AWS, unknown before the endpoint exists (docs/deploy.md: unscoped actions).",
        })
        self.wake_function = self.closed_rule = self.tick = None
        self._listeners()
        scaling = self.service.auto_scale_task_count(min_capacity=config.desired_count, max_capacity=config.max_count)
        scaling.scale_on_cpu_utilization("Cpu", target_utilization_percent=60, scale_in_cooldown=Duration.minutes(10))
        if config.dashboard_schedule == "business-hours":
            self._business_hours()

    # --- the task ----------------------------------------------------------------------------------
    def _task_definition(self, repository: ecr.IRepository, environment: dict[str, str]) -> ecs.FargateTaskDefinition:
        c = self.config
        task = ecs.FargateTaskDefinition(
            self, "Task", cpu=c.cpu, memory_limit_mib=c.memory_mib, task_role=self.task_role,
            runtime_platform=ecs.RuntimePlatform(cpu_architecture=ecs.CpuArchitecture.of(c.cpu_architecture),
                                                 operating_system_family=ecs.OperatingSystemFamily.LINUX),
            volumes=[ecs.Volume(name="data"), ecs.Volume(name="tmp")])
        container = task.add_container(
            CONTAINER, image=ecs.ContainerImage.from_ecr_repository(repository, c.image_tag),
            port_mappings=[ecs.PortMapping(container_port=PORT)],
            logging=ecs.LogDrivers.aws_logs(stream_prefix="dashboard", log_group=self.log_group),
            environment={**environment, "HOME": "/tmp"},  # read-only root: Streamlit's ~/.streamlit goes to /tmp
            # from_ssm_parameter grants the execution role read of that one parameter's ARN; no kms:Decrypt is needed for
            # the AWS managed aws/ssm key, which allows Decrypt to the account's principals through Parameter Store.
            secrets={"OPENAI_API_KEY": ecs.Secret.from_ssm_parameter(self.openai_key_parameter) if self.openai_key_parameter
                     else ecs.Secret.from_secrets_manager(self.openai_key)},
            readonly_root_filesystem=True,
            health_check=ecs.HealthCheck(command=["CMD", "python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen("
                                                  f"'http://127.0.0.1:{PORT}/_stcore/health', timeout=4).status != 200)"],
                                         start_period=Duration.seconds(60)))
        container.add_mount_points(ecs.MountPoint(container_path="/app/data", source_volume="data", read_only=False),
                                   ecs.MountPoint(container_path="/tmp", source_volume="tmp", read_only=False))
        return task

    def _service(self, network: Network) -> ecs.FargateService:
        c = self.config
        # Spot: FARGATE_SPOT for every task beyond fargate_on_demand_base, which stay on FARGATE. ECS does not move a
        # task to FARGATE when Spot has no capacity (docs/deploy.md: the fallback is the base, or fargate_spot false).
        strategies = [ecs.CapacityProviderStrategy(capacity_provider="FARGATE_SPOT" if c.fargate_spot else "FARGATE", weight=1)]
        if c.fargate_spot and c.fargate_on_demand_base:
            strategies.append(ecs.CapacityProviderStrategy(capacity_provider="FARGATE", base=c.fargate_on_demand_base, weight=0))
        return ecs.FargateService(
            self, "Service", cluster=self.cluster, task_definition=self.task_definition, desired_count=c.desired_count,
            assign_public_ip=network.tasks_get_public_ip, vpc_subnets=network.task_subnets, security_groups=[self.task_security_group],
            capacity_provider_strategies=strategies,
            circuit_breaker=ecs.DeploymentCircuitBreaker(enable=True, rollback=True),
            min_healthy_percent=100, max_healthy_percent=200, health_check_grace_period=Duration.seconds(120),
            enable_execute_command=False)

    # --- the front door ------------------------------------------------------------------------------
    def _load_balancer(self, network: Network) -> tuple[ec2.SecurityGroup, elbv2.ApplicationLoadBalancer]:
        dualstack = self.config.load_balancer == "own-dualstack"
        sg = ec2.SecurityGroup(self, "AlbSg", vpc=network.vpc, allow_all_outbound=False, description="Dashboard ALB: HTTPS in")
        peers = [ec2.Peer.ipv6(c) for c in self.config.allowed_ipv6_cidrs] if dualstack else []
        for peer in [ec2.Peer.ipv4(cidr) for cidr in self.config.allowed_cidrs] + peers:
            sg.add_ingress_rule(peer, ec2.Port.tcp(443), "HTTPS")
            sg.add_ingress_rule(peer, ec2.Port.tcp(80), "HTTP, redirected to HTTPS")
        # The authenticate action calls the identity provider's token and user-info endpoints from the ALB.
        sg.add_egress_rule(ec2.Peer.any_ipv4(), ec2.Port.tcp(443), "identity provider endpoints")
        if dualstack:
            sg.add_egress_rule(ec2.Peer.any_ipv6(), ec2.Port.tcp(443), "identity provider endpoints over IPv6")
        alb = elbv2.ApplicationLoadBalancer(
            self, "Alb", vpc=network.vpc, internet_facing=True, security_group=sg,
            # dualstack-without-public-ipv4: no public IPv4 address (billed per hour), users reach it over IPv6 only
            ip_address_type=elbv2.IpAddressType.DUAL_STACK_WITHOUT_PUBLIC_IPV4 if dualstack else elbv2.IpAddressType.IPV4,
            vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PUBLIC),
            idle_timeout=Duration.seconds(self.config.alb_idle_timeout_s), drop_invalid_header_fields=True,
            deletion_protection=True, http2_enabled=True)
        accept_findings(sg, {
            "CKV_AWS_260": "Port 80 only answers a permanent redirect to HTTPS (no forward action on that listener).",
        })
        accept_findings(alb, {
            "CKV_AWS_91": "No access logs by default: they need a log bucket and cost per request; ALB metrics feed the alarms.",
        })
        return sg, alb

    def _certificate_and_record(self) -> acm.ICertificate:
        c = self.config
        if c.certificate_arn:
            return acm.Certificate.from_certificate_arn(self, "Certificate", c.certificate_arn)
        zone = route53.HostedZone.from_hosted_zone_attributes(self, "Zone", hosted_zone_id=c.hosted_zone_id, zone_name=c.hosted_zone_name)
        shared = c.shared_alb
        if c.load_balancer != "shared" or (shared.dns_name and shared.canonical_hosted_zone_id):
            target = route53.RecordTarget.from_alias(route53_targets.LoadBalancerTarget(self.load_balancer))
            record = route53.AaaaRecord if c.load_balancer == "own-dualstack" else route53.ARecord  # no public IPv4 to point A at
            record(self, "Alias", zone=zone, record_name=c.domain_name, target=target)
        return acm.Certificate(self, "Certificate", domain_name=c.domain_name, validation=acm.CertificateValidation.from_dns(zone))

    def _shared_load_balancer(self, network: Network) -> tuple[ec2.ISecurityGroup, elbv2.IApplicationLoadBalancer, elbv2.IApplicationListener]:
        """An existing ALB: import it and its HTTPS listener; this stack adds rules, a target group and a certificate."""
        shared = self.config.shared_alb
        sg = ec2.SecurityGroup.from_security_group_id(self, "SharedAlbSg", shared.security_group_id, mutable=False)
        alb = elbv2.ApplicationLoadBalancer.from_application_load_balancer_attributes(
            self, "SharedAlb", load_balancer_arn=shared.load_balancer_arn, security_group_id=shared.security_group_id,
            load_balancer_dns_name=shared.dns_name, load_balancer_canonical_hosted_zone_id=shared.canonical_hosted_zone_id, vpc=network.vpc)
        listener = elbv2.ApplicationListener.from_application_listener_attributes(self, "SharedListener", listener_arn=shared.listener_arn,
                                                                                   security_group=sg)
        return sg, alb, listener

    def _listeners(self) -> None:
        c = self.config
        target_group = elbv2.ApplicationTargetGroup(
            self, "Targets", vpc=self.cluster.vpc, port=PORT, protocol=elbv2.ApplicationProtocol.HTTP,
            target_type=elbv2.TargetType.IP, targets=[self.service],
            health_check=elbv2.HealthCheck(path="/_stcore/health", healthy_http_codes="200", interval=Duration.seconds(30)),
            deregistration_delay=Duration.seconds(30),
            # A Streamlit session lives in one task's memory: keep a browser on its task.
            stickiness_cookie_duration=Duration.hours(12) if c.max_count > 1 else None)
        self.target_group = target_group
        certificate = self._certificate_and_record() if (c.load_balancer != "shared" or c.certificate_arn or c.hosted_zone_id) else None
        if c.load_balancer == "shared":
            # The host's rule on the shared listener (after /wake and the closed page); its certificate joins the listener's.
            elbv2.ApplicationListenerRule(self, "Rule", listener=self.listener, priority=c.shared_alb.priority + 2,
                                          conditions=self._conditions(), action=self._then_sign_in(elbv2.ListenerAction.forward([target_group])))
            if certificate is not None:
                elbv2.ApplicationListenerCertificate(self, "SharedCertificate", listener=self.listener,
                                                     certificates=[elbv2.ListenerCertificate.from_certificate_manager(certificate)])
            return
        self.listener = self.load_balancer.add_listener(
            "Https", port=443, protocol=elbv2.ApplicationProtocol.HTTPS, open=False,
            certificates=[elbv2.ListenerCertificate.from_certificate_manager(certificate)],
            ssl_policy=elbv2.SslPolicy.RECOMMENDED_TLS,
            default_action=self._then_sign_in(elbv2.ListenerAction.forward([target_group])))
        self.load_balancer.add_listener("Http", port=80, open=False, default_action=elbv2.ListenerAction.redirect(
            protocol="HTTPS", port="443", permanent=True))

    def _conditions(self, *paths: str) -> list[elbv2.ListenerCondition]:
        """On a shared listener every rule is for this host; `paths` narrows it."""
        conditions = [elbv2.ListenerCondition.host_headers([self.config.domain_name])] if self.config.load_balancer == "shared" else []
        return conditions + ([elbv2.ListenerCondition.path_patterns(list(paths))] if paths else [])

    # --- business hours: the closed page, /wake and the clock ------------------------------------------
    def _business_hours(self) -> None:
        """Outside business hours the service runs 0 tasks and a rule answers every path with a page saying when it
        opens, with a Wake button; /wake (a Lambda target, signed-in users only) opens it for wake_minutes. The
        same function, every 15 minutes, opens or closes by the clock (wake/handler.py)."""
        c = self.config
        hours = c.business_hours
        first = c.shared_alb.priority if c.load_balancer == "shared" else 1
        label = f"{hours.days} {hours.start}-{hours.stop} {hours.timezone}"
        closed_page = (
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>Asleep</title></head>"
            "<body style=\"font-family:sans-serif;max-width:40em;margin:4em auto\"><h1>The dashboard is asleep</h1>"
            f"<p>It runs in business hours ({label}). Waking it takes about 2 minutes and keeps it on for "
            f"{c.wake_minutes} minutes.</p><form method=\"post\" action=\"/wake\"><button type=\"submit\">Wake it now</button>"
            "</form></body></html>")
        self.closed_rule = elbv2.ApplicationListenerRule(
            self, "ClosedRule", listener=self.listener, priority=first + 1, conditions=self._conditions(OPEN_PATH),
            action=self._then_sign_in(elbv2.ListenerAction.fixed_response(503, content_type="text/html", message_body=closed_page)))
        log_group = logs.LogGroup(self, "WakeLogs", retention=log_retention(c.log_retention_days), removal_policy=RemovalPolicy.DESTROY)
        accept_findings(log_group, {
            "CKV_AWS_158": "CloudWatch encrypts log data at rest by default; the wake function logs no user data.",
        })
        # Inline policy: part of the role resource, so the function's GetAtt of the role already orders them.
        role = iam.Role(self, "WakeRole", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
                        description="Business-hours dashboard: open/close the service and its closed page",
                        inline_policies={"wake": iam.PolicyDocument(statements=[
                            iam.PolicyStatement(sid="OwnLogs", actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                                                resources=[log_group.log_group_arn]),
                            # scalable-target ARNs carry an id AWS generates at registration: no narrower resource
                            iam.PolicyStatement(sid="ScaleThisService", actions=["application-autoscaling:RegisterScalableTarget"],
                                                resources=["*"]),
                            iam.PolicyStatement(sid="UpdateThisService", actions=["ecs:DescribeServices", "ecs:UpdateService"],
                                                resources=[self.service.service_arn]),
                            iam.PolicyStatement(sid="ToggleClosedPage", actions=["elasticloadbalancing:ModifyRule"],
                                                resources=[self.closed_rule.listener_rule_arn]),
                            iam.PolicyStatement(sid="ReadClosedPage", actions=["elasticloadbalancing:DescribeRules"], resources=["*"]),
                        ])})
        fn = lambda_.Function(
            self, "Wake", runtime=lambda_.Runtime.PYTHON_3_14, architecture=lambda_.Architecture.ARM_64,
            handler="handler.handler", code=lambda_.Code.from_asset(str(WAKE_CODE), exclude=["__pycache__", "*.pyc", "__init__.py"]),
            memory_size=128, timeout=Duration.seconds(15), role=role, log_group=log_group,
            description="Business-hours dashboard: /wake page and the 15-minute open/close clock",
            environment={
                "RESOURCE_ID": f"service/{self.cluster.cluster_name}/{self.service.service_name}",
                "MIN_TASKS": str(c.desired_count), "MAX_TASKS": str(c.max_count),
                "RULE_ARN": self.closed_rule.listener_rule_arn, "HOST": c.domain_name if c.load_balancer == "shared" else "",
                "HOURS": json.dumps({"start": hours.start, "stop": hours.stop, "days": hours.days, "timezone": hours.timezone}),
                "WAKE_MINUTES": str(c.wake_minutes), "ADMINS": json.dumps(c.admin_emails if c.wake_admins_only else []),
            })
        accept_findings(fn, {
            "CKV_AWS_115": "No reserved concurrency: a reservation takes from the account's pool; the function is idempotent "
                           "and a wake-up lasts wake_minutes at most however often it is pressed.",
            "CKV_AWS_116": "No dead-letter queue: the schedule calls it every 15 minutes (the next call repairs a failed one) "
                           "and the ALB answers the user directly.",
            "CKV_AWS_117": "Not in the VPC: it calls only the ECS/Application Auto Scaling and ELB APIs, which a VPC function "
                           "would need a NAT gateway or endpoints to reach.",
            "CKV_AWS_173": "The environment holds resource names and opening hours only, no secrets.",
            "CKV_AWS_272": "Code signing needs a signing profile and a signed artifact pipeline for a 150-line function "
                           "deployed by this stack from this repository.",
        })
        fn.node.default_child.add_deletion_override("DependsOn")  # only the role, already implied by Role: GetAtt
        self.wake_function = fn
        wake_targets = elbv2.ApplicationTargetGroup(self, "WakeTargets", targets=[elbv2_targets.LambdaTarget(fn)])
        for permission in (c for c in fn.node.children if isinstance(c, lambda_.CfnPermission)):
            accept_findings(permission, {
                "CKV_AWS_364": "Elastic Load Balancing may invoke it: the target group registers the function only once this "
                               "permission exists, so the group's ARN cannot be its SourceArn (a dependency cycle); the "
                               "function only opens this dashboard for a while and shows its opening hours.",
            })
        accept_findings(role, {
            "CKV_AWS_111": "Only application-autoscaling:RegisterScalableTarget is unscoped: scalable-target ARNs carry an id "
                           "AWS generates at registration; the rule and service actions are scoped to this stack's ARNs.",
        })
        elbv2.ApplicationListenerRule(self, "WakeRule", listener=self.listener, priority=first, conditions=self._conditions("/wake"),
                                      action=self._then_sign_in(elbv2.ListenerAction.forward([wake_targets])))
        clock = iam.Role(self, "ClockRole", assumed_by=iam.ServicePrincipal("scheduler.amazonaws.com"),
                         description="EventBridge Scheduler: call the wake function's 15-minute open/close tick")
        clock.add_to_policy(iam.PolicyStatement(actions=["lambda:InvokeFunction"], resources=[fn.function_arn]))
        self.tick = scheduler.CfnSchedule(
            # on the quarter hours (a rate would drift from the opening time by up to 15 minutes)
            self, "Clock", schedule_expression="cron(0/15 * * * ? *)", schedule_expression_timezone=hours.timezone,
            flexible_time_window=scheduler.CfnSchedule.FlexibleTimeWindowProperty(mode="OFF"),
            target=scheduler.CfnSchedule.TargetProperty(
                arn=fn.function_arn, role_arn=clock.role_arn, input=json.dumps({"action": "tick"}),
                retry_policy=scheduler.CfnSchedule.RetryPolicyProperty(maximum_retry_attempts=2, maximum_event_age_in_seconds=600)))

    # --- sign-in -------------------------------------------------------------------------------------
    def _identity(self):
        """The authenticate action's identity provider, made once; returns `then -> authenticate, then`."""
        c = self.config
        if c.auth == "oidc":
            o = c.oidc
            return lambda then: elbv2.ListenerAction.authenticate_oidc(
                issuer=o.issuer, authorization_endpoint=o.authorization_endpoint, token_endpoint=o.token_endpoint,
                user_info_endpoint=o.user_info_endpoint, client_id=o.client_id,
                client_secret=SecretValue.secrets_manager(o.client_secret_name), scope="openid email profile",
                session_timeout=Duration.hours(12), next=then)
        pool = cognito.UserPool(
            self, "Users", self_sign_up_enabled=False, sign_in_aliases=cognito.SignInAliases(email=True),
            auto_verify=cognito.AutoVerifiedAttrs(email=True), mfa=cognito.Mfa.OPTIONAL,
            mfa_second_factor=cognito.MfaSecondFactor(otp=True, sms=False),
            password_policy=cognito.PasswordPolicy(min_length=12, require_lowercase=True, require_uppercase=True,
                                                   require_digits=True, require_symbols=True),
            account_recovery=cognito.AccountRecovery.EMAIL_ONLY,
            removal_policy=RemovalPolicy.RETAIN)
        self.user_pool = pool
        prefix = c.cognito_domain_prefix or f"{c.app_name}-{Stack.of(self).account}"
        domain = pool.add_domain("SignIn", cognito_domain=cognito.CognitoDomainOptions(domain_prefix=prefix))
        client = pool.add_client(
            "Alb", generate_secret=True,
            o_auth=cognito.OAuthSettings(flows=cognito.OAuthFlows(authorization_code_grant=True),
                                         scopes=[cognito.OAuthScope.OPENID, cognito.OAuthScope.EMAIL, cognito.OAuthScope.PROFILE],
                                         callback_urls=[f"https://{c.domain_name}/oauth2/idpresponse"]),
            supported_identity_providers=[cognito.UserPoolClientIdentityProvider.COGNITO])
        return lambda then: elbv2_actions.AuthenticateCognitoAction(user_pool=pool, user_pool_client=client, user_pool_domain=domain,
                                                                    session_timeout=Duration.hours(12), next=then)

