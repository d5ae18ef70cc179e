"""The other seed systems' APIs (issue 15), as thin translations onto datasets, jobs and
tasks: the script catalog (``scripts``), DRMAAtic's tasks (``drmaatic``), the batch API
(``batches``) and users' API keys (``apikeys``)."""
