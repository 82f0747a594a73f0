"""`dg scaffold defs retl_dagster.components.<Sync|Destinations|Alerts> <path>`: a commented
`defs.yaml` to fill in. Written as text, not dumped from a model, so the comments that say what
each key does survive."""

import re
from string import Template

import dagster as dg
from dagster.components.scaffold.scaffold import NoParams  # Scaffolder's default params

SYNC = Template("""\
# A Reverse ETL sync: keeps a destination in step with a warehouse model.
# Fill in the keys below, then check with `retl validate` (or `dg check defs`).
# Every key is described in the README, "Declaring a sync".
type: retl_dagster.components.Sync
attributes:
  # name: lower-case letters, digits, underscores; unique among the syncs
  name: $name
  model: {table: main.users}       # one of: dbt: <model> | table: <schema.table> | sql: <select>
  primary_key: user_id             # unique and never null in the model
  destination: my_destination      # a name declared by a Destinations component
  # object: contacts               # the destination's object, table or event name
  # match: {column: email, field: email}   # model column -> the destination's identifier
  mode: upsert                     # insert | update | upsert | mirror | events
  mappings:                        # only mapped columns are hashed and sent
    - {from: email, to: email}
  # delete_behavior: nothing       # nothing | clear | delete
  # schedule: {interval: 1h}       # or {cron: "0 * * * *", timezone: UTC}; none = manual
  # run_on_model_update: true      # also run when the model asset is materialised
  # alerts: {on: [failed], slack: ops}
""")

DESTINATIONS = Template("""\
# Destinations the syncs deliver to; each becomes Dagster resource `destination__<name>`.
# Secrets come from the environment: a value that is exactly `{{ env.NAME }}` is read only
# inside a run. Every type and its options: README, "Declaring a sync" (the destinations table).
type: retl_dagster.components.Destinations
attributes:
  destinations:
    my_destination:                # the name syncs use in `destination:`
      type: webhook                # webhook | file | postgres | hubspot | salesforce | ...
      url: "{{ env.MY_DESTINATION_URL }}"
      # secret: "{{ env.MY_DESTINATION_SECRET }}"
      # batch_size: 100
      # pool_limit: 4              # syncs delivering to it at once
""")

ALERTS = Template("""\
# Where alerts go: Slack incoming webhooks by name, and one SMTP server. A sync chooses with
# `alerts: {on: [failed, partial], slack: <name>, email: [someone@example.com]}`.
# README, "Alerts".
type: retl_dagster.components.Alerts
attributes:
  channels:
    slack:
      ops: {webhook_url: "{{ env.SLACK_OPS_WEBHOOK_URL }}"}
    # email:
    #   host: smtp.example.com
    #   port: 587
    #   security: starttls         # starttls | ssl | none
    #   username: retl
    #   password: "{{ env.SMTP_PASSWORD }}"
    #   sender: retl@example.com
""")


def _write(request: dg.ScaffoldRequest[NoParams], template: Template) -> None:
    name = re.sub(r"[^a-z0-9_]", "_", request.target_path.name.lower()).strip("_") or "my_sync"
    request.target_path.mkdir(parents=True, exist_ok=True)
    path = request.target_path / "defs.yaml"
    if path.exists():
        raise FileExistsError(f"{path} exists already; scaffold into a new folder")
    path.write_text(template.substitute(name=name))


class SyncScaffolder(dg.Scaffolder[NoParams]):
    def scaffold(self, request: dg.ScaffoldRequest[NoParams]) -> None:
        _write(request, SYNC)


class DestinationsScaffolder(dg.Scaffolder[NoParams]):
    def scaffold(self, request: dg.ScaffoldRequest[NoParams]) -> None:
        _write(request, DESTINATIONS)


class AlertsScaffolder(dg.Scaffolder[NoParams]):
    def scaffold(self, request: dg.ScaffoldRequest[NoParams]) -> None:
        _write(request, ALERTS)
