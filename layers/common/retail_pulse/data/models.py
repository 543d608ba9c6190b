"""PynamoDB record models: the only definition of the tables the code uses.

template.yaml declares the same keys and indexes; tests/unit/test_template.py checks that
the two agree.
"""

from __future__ import annotations

from pynamodb.attributes import NumberAttribute, UnicodeAttribute, UTCDateTimeAttribute
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex, IncludeProjection
from pynamodb.models import Model

from retail_pulse.settings import get_settings

_settings = get_settings()

PENDING = "pending"
SUCCEEDED = "succeeded"
FAILED = "failed"


class _Meta:
    region = _settings.region
    host = _settings.endpoint_url
    # The process function writes from one thread per record of a batch.
    max_pool_connections = 32


class JobRecord(Model):
    """One submitted job; its counters make status O(1) whatever the job's size."""

    class Meta(_Meta):
        table_name = _settings.jobs_table

    job_id = UnicodeAttribute(hash_key=True)
    total = NumberAttribute()
    succeeded = NumberAttribute(default=0)
    failed = NumberAttribute(default=0)
    visit_count = NumberAttribute()
    created_at = UTCDateTimeAttribute()
    finished_at = UTCDateTimeAttribute(null=True)

    @property
    def done(self) -> bool:
        return self.succeeded + self.failed >= self.total


class FailedImagesIndex(GlobalSecondaryIndex["ImageRecord"]):
    """Sparse: only failed images carry `failed_job_id`, so a failed job's status reads
    its failures without touching its successes."""

    class Meta:
        index_name = "FailedImages"
        projection = IncludeProjection(["store_id", "error"])

    failed_job_id = UnicodeAttribute(hash_key=True)
    image_index = NumberAttribute(range_key=True)


class StoreVisitsIndex(GlobalSecondaryIndex["ImageRecord"]):
    """Sparse: successful images by store, in visit-time order (the visits API)."""

    class Meta:
        index_name = "StoreVisits"
        projection = AllProjection()

    result_store_id = UnicodeAttribute(hash_key=True)
    visit_key = UnicodeAttribute(range_key=True)


class AreaVisitsIndex(GlobalSecondaryIndex["ImageRecord"]):
    """Sparse: successful images by area code, in visit-time order (the visits API)."""

    class Meta:
        index_name = "AreaVisits"
        projection = AllProjection()

    result_area = UnicodeAttribute(hash_key=True)
    visit_key = UnicodeAttribute(range_key=True)


class ImageRecord(Model):
    """One image of one job; `state` moves pending -> succeeded | failed exactly once."""

    class Meta(_Meta):
        table_name = _settings.images_table

    job_id = UnicodeAttribute(hash_key=True)
    image_index = NumberAttribute(range_key=True)
    store_id = UnicodeAttribute()
    area = UnicodeAttribute(null=True)
    url = UnicodeAttribute()
    visit_time = UnicodeAttribute()  # RFC 3339, UTC
    # "<visit_time>#<job_id>#<index>": time order first, unique per image.
    visit_key = UnicodeAttribute()
    state = UnicodeAttribute(default=PENDING)
    perimeter = NumberAttribute(null=True)
    width = NumberAttribute(null=True)
    height = NumberAttribute(null=True)
    error = UnicodeAttribute(null=True)
    attempts = NumberAttribute(null=True)
    finished_at = UTCDateTimeAttribute(null=True)
    failed_job_id = UnicodeAttribute(null=True)
    result_store_id = UnicodeAttribute(null=True)
    result_area = UnicodeAttribute(null=True)

    failed_images = FailedImagesIndex()
    store_visits = StoreVisitsIndex()
    area_visits = AreaVisitsIndex()


class StoreRecord(Model):
    """One store of the store master."""

    class Meta(_Meta):
        table_name = _settings.stores_table

    store_id = UnicodeAttribute(hash_key=True)
    area_code = UnicodeAttribute()
    store_name = UnicodeAttribute()


ALL_MODELS: tuple[type[Model], ...] = (JobRecord, ImageRecord, StoreRecord)
