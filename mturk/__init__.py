"""Amazon Mechanical Turk through boto3 (one client seam, :mod:`mturk.aws`): the publishing ledger,
costs, publish / status / collect / review / expire. The other crowds live in :mod:`crowds`."""

__all__ = ["aws", "collect", "costs", "durations", "environments", "expire", "hits", "images_s3", "ledger", "publish", "review", "status"]
