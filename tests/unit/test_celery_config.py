"""The Celery app's delivery guarantees are configuration: pin them."""

from __future__ import annotations

from pipeline.settings import load_settings
from workers.app import ROUTES, celery_config


def test_tasks_are_acked_late_one_at_a_time_and_requeued_if_the_worker_dies() -> None:
    config = celery_config(load_settings())
    assert config["task_acks_late"] is True
    assert config["task_reject_on_worker_lost"] is True
    assert config["worker_prefetch_multiplier"] == 1


def test_three_queues_and_job_routing() -> None:
    config = celery_config(load_settings())
    assert {queue.name for queue in config["task_queues"]} == {"critical", "default", "export"}
    assert config["task_default_queue"] == "default"
    assert ROUTES["tasks.crm_sync.*"] == {"queue": "critical"}
    assert ROUTES["tasks.export.*"] == {"queue": "export"}


def test_visibility_timeout_outlasts_every_countdown_the_policy_can_produce() -> None:
    settings = load_settings()
    config = celery_config(settings)
    visibility = config["broker_transport_options"]["visibility_timeout"]
    assert visibility == settings.broker_visibility_timeout_s
    assert visibility > settings.max_retry_countdown_s + settings.task_time_limit_s


def test_only_json_crosses_the_broker() -> None:
    config = celery_config(load_settings())
    assert config["accept_content"] == ["json"]
    assert config["task_serializer"] == config["result_serializer"] == "json"


def test_a_redis_broker_reads_envelopes_safely_and_a_consumer_keeps_poison() -> None:
    """`redis://` gets the transport that hands unreadable bytes to the consumer (plain
    URLs still work); other brokers keep their own transport."""
    from kombu import Connection

    config = celery_config(load_settings(broker_url="redis://127.0.0.1:6379/0"))
    assert config["broker_transport"] == "workers.broker_transport:Transport"
    assert config["worker_consumer"] == "workers.consumer:DeadLetterConsumer"
    connection = Connection(config["broker_url"], transport=config["broker_transport"])
    assert (connection.hostname, connection.port, connection.virtual_host) == (
        "127.0.0.1",
        6379,
        "0",
    )
    for other in ("memory://", "amqp://guest:guest@127.0.0.1:5672//"):
        assert celery_config(load_settings(broker_url=other))["broker_transport"] is None
