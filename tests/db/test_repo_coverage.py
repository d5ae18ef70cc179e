"""Every public coroutine method of every repository class has a contract test.

``COVERED`` maps each method to the tests in the per-repository files (``test_repo_*.py``)
exercising it; ``test_every_repository_method_has_a_contract_test`` fails when a method is
added (or removed) without updating it, or when a listed test does not call the method.
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from iceprod.db import REPOSITORIES, Database
from iceprod.db.base import Repository

# "<defining class>.<method>" -> the tests in ``test_repo_*.py`` that call it as
# ``db.<repo>.<method>(``.
COVERED: dict[str, tuple[str, ...]] = {
    "ScriptsRepo.put": ("test_scripts_put_replace_window_delete",),
    "ScriptsRepo.window": ("test_scripts_put_replace_window_delete",),
    "ScriptsRepo.delete": ("test_scripts_put_replace_window_delete",),
    "SubmissionsRepo.create": ("test_submissions_by_user_kind_and_deletion",),
    "SubmissionsRepo.of_user": ("test_submissions_by_user_kind_and_deletion",),
    "SubmissionsRepo.of_kind": ("test_submissions_by_user_kind_and_deletion",),
    "SubmissionsRepo.mark_deleted": ("test_submissions_by_user_kind_and_deletion",),
    "ApiKeysRepo.create": ("test_apikeys_create_list_delete",),
    "ApiKeysRepo.of_user": ("test_apikeys_create_list_delete",),
    "ApiKeysRepo.delete_named": ("test_apikeys_create_list_delete",),
    "Repository.get": ("test_get_find_and_projection",),
    "Repository.get_in": ("test_get_in_scopes_by_dataset",),
    "JobsRepo.any_with_status": ("test_jobs_any_with_status",),
    "TasksRepo.queued_groups": ("test_queued_groups_count_queued_tasks_by_requirements",),
    "ConfigRepo.task_names": ("test_config_task_names_and_dataset_number",),
    "DatasetsRepo.id_of_number": ("test_config_task_names_and_dataset_number",),
    "TasksRepo.bulk_status_selected": ("test_bulk_status_selected_and_task_names",),
    "TasksRepo.names": ("test_bulk_status_selected_and_task_names",),
    "TasksRepo.demand": ("test_queued_groups_count_queued_tasks_by_requirements",),
    "Repository.find": ("test_get_find_and_projection", "test_pilots_create_heartbeat_delete"),
    "Repository.status_counts": ("test_status_counts",),
    "AuthsRepo.set_rules": ("test_auths_set_rules_and_readable",),
    "AuthsRepo.readable": ("test_auths_set_rules_and_readable",),
    "AuthsRepo.remove": ("test_auths_set_rules_and_readable",),
    "ConfigRepo.get_config": ("test_config_put_and_get",),
    "ConfigRepo.put": ("test_config_put_and_get",),
    "DatasetsRepo.create": ("test_datasets_create_and_set_fields",),
    "DatasetsRepo.set_status": ("test_datasets_set_status",),
    "DatasetsRepo.set_fields": ("test_datasets_create_and_set_fields",),
    "DatasetsRepo.grow_jobs": ("test_datasets_grow_jobs_only_grows",),
    "DatasetsRepo.ids_by_status": ("test_datasets_ids_by_status",),
    "DatasetsRepo.advance_materialized": ("test_datasets_processing_and_materialization",),
    "DatasetsRepo.processing": ("test_datasets_processing_and_materialization",),
    "DatasetsRepo.needing_materialization": ("test_datasets_processing_and_materialization",),
    "FilesRepo.create": ("test_files_delete_for_task",),
    "FilesRepo.delete_for_task": ("test_files_delete_for_task",
                                  "test_files_for_task_by_id_or_by_job_and_name"),
    "FilesRepo.for_task": ("test_files_for_task_by_id_or_by_job_and_name",),
    "GridsRepo.create": ("test_grids_create",),
    "GridsRepo.set_fields": ("test_grids_set_fields",),
    "DatasetsRepo.ids_of_user": ("test_datasets_ids_of_user_and_a_claim_limited_to_them",),
    "JobsRepo.create": ("test_jobs_create_and_insert_missing_is_idempotent",),
    "JobsRepo.insert_missing": ("test_jobs_create_and_insert_missing_is_idempotent",),
    "JobsRepo.set_status": ("test_jobs_set_status_and_patch",),
    "JobsRepo.patch": ("test_jobs_set_status_and_patch",),
    "JobsRepo.counts_by_status": ("test_jobs_counts_and_ids_by_status",),
    "JobsRepo.ids_by_status": ("test_jobs_counts_and_ids_by_status",),
    "JobsRepo.bulk_status": ("test_jobs_bulk_status",),
    "LogsRepo.create": ("test_logs_for_task", "test_logs_failed_write_leaves_nothing"),
    "LogsRepo.for_task": ("test_logs_for_task",
                          "test_logs_are_stored_in_chunks_and_read_whole",
                          "test_logs_of_16_mib_round_trip_and_list_together"),
    "LogsRepo.find": ("test_logs_are_stored_in_chunks_and_read_whole",
                      "test_logs_delete_for_task_and_dataset_remove_the_chunks"),
    "LogsRepo.page": ("test_logs_are_stored_in_chunks_and_read_whole",),
    "LogsRepo.delete_for_task": ("test_logs_delete_for_task_and_dataset_remove_the_chunks",),
    "LogsRepo.delete_for_dataset": ("test_logs_delete_for_task_and_dataset_remove_the_chunks",),
    "PilotsRepo.create": ("test_pilots_create_heartbeat_delete",),
    "PilotsRepo.heartbeat": ("test_pilots_create_heartbeat_delete",),
    "PilotsRepo.delete": ("test_pilots_create_heartbeat_delete",),
    "SettingsRepo.next_counter": ("test_settings_next_counter",
                                  "test_settings_next_counter_is_atomic"),
    "SettingsRepo.acquire_lease": ("test_settings_leases",
                                   "test_settings_lease_has_one_holder_under_concurrency"),
    "SettingsRepo.release_lease": ("test_settings_leases",),
    "SettingsRepo.put_value": ("test_settings_values",),
    "SettingsRepo.get_value": ("test_settings_values",),
    "SettingsRepo.put_entry": ("test_settings_entries",),
    "SettingsRepo.entries": ("test_settings_entries",),
    "SettingsRepo.delete_entry": ("test_settings_entries",),
    "TaskStatsRepo.create": ("test_task_stats_latest",),
    "TaskStatsRepo.latest": ("test_task_stats_latest",),
    "TaskStatsRepo.of_dataset": ("test_task_stats_of_dataset",),
    "DatasetsRepo.listing": ("test_datasets_listing_newest_first_with_keys",),
    "TasksRepo.counts_by_datasets": ("test_counts_by_datasets_in_one_query",),
    "TasksRepo.for_plots": ("test_for_plots_projects_what_the_plots_need",),
    "GroupsRepo.create": ("test_groups_create_ensure_missing_delete",),
    "GroupsRepo.ensure": ("test_groups_create_ensure_missing_delete",),
    "GroupsRepo.missing": ("test_groups_create_ensure_missing_delete",),
    "GroupsRepo.delete": ("test_groups_create_ensure_missing_delete",),
    "RevocationsRepo.revoke": ("test_revocations",),
    "RevocationsRepo.not_before": ("test_revocations",),
    "RolesRepo.put": ("test_roles_put_all_scopes_delete",),
    "RolesRepo.all": ("test_roles_put_all_scopes_delete",),
    "RolesRepo.scopes_of": ("test_roles_put_all_scopes_delete",),
    "RolesRepo.delete": ("test_roles_put_all_scopes_delete",),
    "UsersRepo.create": ("test_users_create_and_lookups",),
    "UsersRepo.by_username": ("test_users_create_and_lookups",),
    "UsersRepo.by_identity": ("test_users_create_and_lookups",),
    "UsersRepo.find_many": ("test_users_create_and_lookups",),
    "UsersRepo.set_fields": ("test_users_set_fields_add_group_delete",),
    "UsersRepo.add_group": ("test_users_set_fields_add_group_delete",),
    "UsersRepo.delete": ("test_users_set_fields_add_group_delete",),
    "UsersRepo.with_value": ("test_users_with_value_and_pull_everywhere",),
    "UsersRepo.pull_everywhere": ("test_users_with_value_and_pull_everywhere",),
    "TasksRepo.create": ("test_tasks_create_and_insert_missing_is_idempotent",),
    "TasksRepo.insert_missing": ("test_tasks_create_and_insert_missing_is_idempotent",),
    "TasksRepo.set_status": ("test_tasks_set_status_and_patch",),
    "TasksRepo.patch": ("test_tasks_set_status_and_patch",),
    "TasksRepo.claim": ("test_claim_sets_the_fencing_token_and_lease",
                        "test_claim_is_atomic_under_concurrent_pilots"),
    "TasksRepo.complete": ("test_complete_is_fenced_by_instance_id",
                           "test_complete_after_reissue_refuses_the_stale_pilot"),
    "TasksRepo.requeue": ("test_requeue_is_an_eviction_and_complete_clears_the_reason",),
    "TasksRepo.reset": ("test_reset_counts_a_failure_and_grows_requirements",
                        "test_reset_fails_after_max_failures",
                        "test_reset_with_fail_fails_at_once",
                        "test_reset_wrong_state_stale_and_missing"),
    "TasksRepo.release_pilot": ("test_held_by_and_release_pilot",),
    "TasksRepo.held_by": ("test_held_by_and_release_pilot",),
    "TasksRepo.renew_leases": ("test_renew_and_expire_leases",),
    "TasksRepo.expire_leases": ("test_renew_and_expire_leases",),
    "TasksRepo.queue_dataset": ("test_queue_dataset_respects_depends_and_priority",
                                "test_queue_dataset_and_bulk_status_work_in_batches",
                                "test_queue_dataset_takes_the_highest_priority_ready_tasks"),
    "TasksRepo.bulk_status": ("test_bulk_status_by_ids_name_and_all",
                              "test_bulk_status_suspending_processing_releases_it",
                              "test_tasks_bulk_status_by_job_and_from_status"),
    "TasksRepo.bulk_requirements": ("test_bulk_requirements",),
    "TasksRepo.preview_selected": ("test_previews_predict_the_bulk_changes_exactly",),
    "TasksRepo.preview_status": ("test_previews_predict_the_bulk_changes_exactly",),
    "TasksRepo.preview_requirements": ("test_previews_predict_the_bulk_changes_exactly",),
    "AuditRepo.append": ("test_audit_append_and_search",),
    "AuditRepo.search": ("test_audit_append_and_search",),
    "TasksRepo.unqueue_dataset": ("test_unqueue_dataset_sends_back_the_lowest_priority",),
    "TasksRepo.set_dataset_priority": ("test_set_dataset_priority_and_counts_by_dataset",),
    "TasksRepo.counts_by_dataset": ("test_set_dataset_priority_and_counts_by_dataset",),
    "TasksRepo.of_job": ("test_of_job",),
    "TasksRepo.counts_by_status": ("test_task_counts_and_ids_by_status",),
    "TasksRepo.ids_by_status": ("test_task_counts_and_ids_by_status",),
    "TasksRepo.counts_by_name_status": ("test_counts_by_name_status_in_task_index_order",),
    "TasksRepo.queue_ready": ("test_queue_ready_complete_ids_briefs_and_queued_ids",),
    "TasksRepo.complete_ids": ("test_queue_ready_complete_ids_briefs_and_queued_ids",),
    "TasksRepo.briefs": ("test_queue_ready_complete_ids_briefs_and_queued_ids",),
    "EventsRepo.reserve": ("test_events_append_since_and_prune",),
    "EventsRepo.append": ("test_events_append_since_and_prune",),
    "EventsRepo.since": ("test_events_append_since_and_prune",),
    "EventsRepo.between": ("test_events_append_since_and_prune",),
    "EventsRepo.last_seq": ("test_events_append_since_and_prune",),
    "EventsRepo.first_seq": ("test_events_append_since_and_prune",),
    "EventsRepo.prune": ("test_events_append_since_and_prune",),
    "TasksRepo.stats_by_name": ("test_stats_by_name_and_efficiency",
                                "test_stats_by_name_through_complete_and_reset"),
    "ProjectsRepo.create": ("test_projects_create_update_quota_delete",),
    "ProjectsRepo.update": ("test_projects_create_update_quota_delete",),
    "ProjectsRepo.set_quota": ("test_projects_create_update_quota_delete",),
    "ProjectsRepo.delete": ("test_projects_create_update_quota_delete",),
    "ProjectsRepo.of_member": ("test_projects_create_update_quota_delete",),
    "ProjectsRepo.with_quota": ("test_projects_create_update_quota_delete",),
    "ProjectsRepo.dataset_ids": ("test_projects_datasets_and_cores_held",),
    "ProjectsRepo.cores_held": ("test_projects_datasets_and_cores_held",),
    "ProjectsRepo.largest_waiting_cpu": ("test_projects_datasets_and_cores_held",),
    "UsageRepo.add": ("test_usage_add_and_totals",),
    "UsageRepo.totals": ("test_usage_add_and_totals",),
    "UsageRepo.get_rates": ("test_usage_rates",),
    "UsageRepo.put_rates": ("test_usage_rates",),
    "ArchiveRepo.candidates": ("test_archive_candidates_summary_compact_record",),
    "ArchiveRepo.task_summary": ("test_archive_candidates_summary_compact_record",),
    "ArchiveRepo.task_totals": ("test_archive_candidates_summary_compact_record",),
    "ArchiveRepo.compact": ("test_archive_candidates_summary_compact_record",),
    "ArchiveRepo.record": ("test_archive_candidates_summary_compact_record",),
    "DatasetsRepo.page": ("test_datasets_page_by_status_user_group_and_ids",),
    "JobsRepo.page": ("test_jobs_and_tasks_pages_and_counts",),
    "TasksRepo.page": ("test_jobs_and_tasks_pages_and_counts",),
    "TasksRepo.count": ("test_jobs_and_tasks_pages_and_counts",),
    "TasksRepo.queued_ahead": ("test_jobs_and_tasks_pages_and_counts",),
    "PilotsRepo.page": ("test_pilots_users_groups_projects_pages",),
    "PilotsRepo.set_status": ("test_transition_follows_the_state_machine",),
    "UsersRepo.page": ("test_pilots_users_groups_projects_pages",),
    "GroupsRepo.page": ("test_pilots_users_groups_projects_pages",),
    "ProjectsRepo.page": ("test_pilots_users_groups_projects_pages",),
    "GridsRepo.page": ("test_page_visits_every_doc_exactly_once",
                       "test_page_bad_cursor_is_invalid"),
    "TaskStatsRepo.page": ("test_stats_logs_and_files_of_a_dataset",),
    "TaskStatsRepo.get_of_task": ("test_stats_logs_and_files_of_a_dataset",),
    "LogsRepo.count": ("test_stats_logs_and_files_of_a_dataset",),
    "FilesRepo.of_dataset": ("test_stats_logs_and_files_of_a_dataset",),
}


class _NoStore:
    """Just enough of a ``Store`` to build a ``Database`` without a backend."""

    def collection(self, spec: Any) -> None:
        return None


def public_coroutines() -> dict[str, str]:
    """``"<defining class>.<method>"`` -> the method name, for every public coroutine method
    reachable on a repository class."""
    out = {}
    for cls in REPOSITORIES:
        for name, _ in inspect.getmembers(cls, inspect.iscoroutinefunction):
            if name.startswith("_"):
                continue
            owner = next(k for k in cls.__mro__ if name in vars(k))
            out[f"{owner.__name__}.{name}"] = name
    return out


def test_every_repository_is_in_the_database() -> None:
    import importlib
    import pkgutil

    import iceprod.db

    for info in pkgutil.iter_modules(iceprod.db.__path__):
        importlib.import_module(f"iceprod.db.{info.name}")
    defined = {c for c in _subclasses(Repository) if c.__module__.startswith("iceprod.db.")}
    assert defined == set(REPOSITORIES)
    database = Database(_NoStore())  # type: ignore[arg-type]
    held = {type(v) for v in vars(database).values() if isinstance(v, Repository)}
    assert held == set(REPOSITORIES)


def _subclasses(cls: type[Any]) -> set[type]:
    out: set[type] = set()
    for sub in cls.__subclasses__():
        out |= {sub, *_subclasses(sub)}
    return out


def contract_tests() -> dict[str, Callable[..., Any]]:
    """Every test function of the per-repository contract files, by name (a name used in two
    files would make ``COVERED`` ambiguous, so it fails here)."""
    out: dict[str, Callable[..., Any]] = {}
    for path in sorted(Path(__file__).parent.glob("test_repo_*.py")):
        module = importlib.import_module(f"{__package__}.{path.stem}")
        for name, fn in vars(module).items():
            if name.startswith("test_") and inspect.isfunction(fn) and fn.__module__ == module.__name__:
                assert name not in out, f"{name} is defined in two contract files"
                out[name] = fn
    return out


def test_every_repository_method_has_a_contract_test() -> None:
    methods = public_coroutines()
    missing = sorted(set(methods) - set(COVERED))
    stale = sorted(set(COVERED) - set(methods))
    assert not missing, f"repository methods without a contract test: {missing}"
    assert not stale, f"COVERED lists methods that no longer exist: {stale}"

    found = contract_tests()
    database = Database(_NoStore())  # type: ignore[arg-type]
    attr_of = {
        type(v).__name__: k for k, v in vars(database).items() if isinstance(v, Repository)
    }
    for key, tests in COVERED.items():
        owner, name = key.split(".")
        repo = r"\w+" if owner == "Repository" else re.escape(attr_of[owner])
        call = re.compile(rf"\bdb\.{repo}\.{re.escape(name)}\(")
        assert tests, key
        for test_name in tests:
            test = found.get(test_name)
            assert test is not None and test_name.startswith("test_"), f"{key}: {test_name}?"
            assert call.search(inspect.getsource(test)), f"{test_name} never calls {key}"

