"""S3 put -> import the recipients of one CSV upload."""

from smsinvite.csv_rows import read_rows
from smsinvite.importing import RecipientImport, S3Upload
from smsinvite.object_store import object_chunks
from smsinvite.observability import instrumented, logger, metrics, MetricUnit
from smsinvite.settings import Settings
from smsinvite.store import Store


@instrumented
def lambda_handler(event: dict, context) -> dict:
    settings = Settings.from_env()
    importer = RecipientImport(Store(settings))
    results = []
    for record in event.get("Records", []):
        upload = S3Upload.from_record(record)
        summary = importer.run(upload, read_rows(object_chunks(upload.bucket, upload.key, upload.version_id)))
        logger.info("import finished", extra=summary.as_dict())
        metrics.add_metric(name="RowsImported", unit=MetricUnit.Count, value=summary.outcomes["imported"])
        results.append(summary.as_dict())
    return {"imports": results}
