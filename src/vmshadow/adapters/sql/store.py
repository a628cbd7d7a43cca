"""`SqlStore`: the Store port over SQLAlchemy 2 Core, on SQLite (embedded mode) or PostgreSQL (distributed mode).

Use `open_store(url)`: it migrates the database to the newest schema first, so a new SQLite file or an empty
PostgreSQL schema just works. `SqlStore(url)` alone connects without migrating.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, Table, create_engine, event, func, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import StaticPool

from vmshadow.adapters.sql import tables as t
from vmshadow.adapters.sql.tables import utc
from vmshadow.domain import codec
from vmshadow.domain.decision import Decision, TMRVersion
from vmshadow.domain.errors import BackendUnavailableError
from vmshadow.domain.finding import Finding
from vmshadow.domain.flow import Flow
from vmshadow.domain.indicator import Indicator
from vmshadow.domain.outcome import Outcome, OutcomeKind, TrustSnapshot
from vmshadow.domain.proposal import Proposal, ProposalState
from vmshadow.ports.store import FlowKeys, KeyFilter

MIGRATIONS = Path(__file__).with_name("migrations")

# Execution option marking a writing transaction; on SQLite it makes the transaction take the write lock up front.
_WRITE = "vmshadow_write"
# Any constant works: it only has to be the same for every process migrating the same PostgreSQL database.
_MIGRATION_LOCK = 0x766D73
_SQLITE_BUSY_TIMEOUT_S = 30.0
# The DPI fields threat intel matches on, in `FlowKeys` order after the addresses.
_KEY_FIELDS = ("dns_query", "sni", "http_host", "client_fingerprint", "server_fingerprint")
_KEY_BATCH = 10_000
_SCAN_PARTS = max(1, min(4, os.cpu_count() or 1))  # a filtered key scan runs on this many threads
_BULK_CACHE_KIB = -262_144  # 256 MiB (negative: KiB), while a bulk upsert runs
_BULK_REBUILD_MIN = 50_000  # indicators in one upsert from which its indexes may be built afresh
# the `indicators` columns in `tables.py` order; a contract test proves the upsert stores what SQLAlchemy would
_SQLITE_UPSERT_INDICATOR = (
    "INSERT INTO indicators (id, type, value, source, valid_until, revoked, updated_at, data) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET type = excluded.type, value = excluded.value, "
    "source = excluded.source, valid_until = excluded.valid_until, revoked = excluded.revoked, "
    "updated_at = excluded.updated_at, data = excluded.data"
)

Row = dict[str, Any]


def make_engine(url: str) -> Engine:
    """An engine for `url` (``sqlite:///path``, ``sqlite://`` in memory, ``postgresql[+psycopg]://...``)."""
    u = make_url(url)
    backend = u.get_backend_name()
    if backend == "sqlite":
        in_memory = u.database in (None, "", ":memory:")
        if not in_memory and not u.query.get("uri") and u.database is not None:
            Path(u.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            u,
            connect_args={"check_same_thread": False, "timeout": _SQLITE_BUSY_TIMEOUT_S},
            # An in-memory database lives in one connection; a pool would hand out empty ones.
            **({"poolclass": StaticPool} if in_memory else {}),
        )
        _install_sqlite_hooks(engine)
        return engine
    if backend == "postgresql":
        if u.drivername == "postgresql":
            u = u.set(drivername="postgresql+psycopg")  # psycopg 3 is the driver we ship, not psycopg2
        return create_engine(u, pool_pre_ping=True)
    raise ValueError(f"unsupported database URL {u.render_as_string()!r}: use sqlite:/// or postgresql://")


def _install_sqlite_hooks(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # pysqlite BEGINs only before DML, so reads in a transaction would not be isolated and DDL would
        # autocommit; switch that off and BEGIN ourselves in `_on_begin`.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA foreign_keys = ON")  # off by default, per connection
            cursor.execute("PRAGMA journal_mode = WAL")  # readers and the writer do not block each other
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # A deferred transaction that read first cannot upgrade to a write lock another writer took meanwhile
        # (SQLITE_BUSY at once, the busy timeout does not help), so writers take the lock when they begin.
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(_WRITE) else "BEGIN")


def alembic_config() -> Config:
    """Alembic's configuration without an alembic.ini, pointing at the migrations inside this package."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("path_separator", "os")
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate the database behind `engine` to `revision`, in one transaction (both databases have
    transactional DDL), so a failed migration leaves the schema as it was."""
    config = alembic_config()
    with engine.execution_options(**{_WRITE: True}).begin() as conn:
        if conn.dialect.name == "postgresql":
            # Workers starting together would otherwise race to create the same tables.
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})")
        config.attributes["connection"] = conn
        command.upgrade(config, revision)


def open_store(url: str) -> SqlStore:
    """A store for `url`, migrated to the newest schema. `BackendUnavailableError` when it cannot connect."""
    store = SqlStore(url)
    try:
        store.migrate()
    except OperationalError as e:
        store.close()
        raise BackendUnavailableError(f"database {store.url} is not reachable: {e.orig}") from e
    except BaseException:
        store.close()
        raise
    return store


class SqlStore:
    """The Store port on SQLite or PostgreSQL. Thread-safe: every call uses its own pooled connection."""

    def __init__(self, url: str) -> None:
        self._engine = make_engine(url)
        self._writer = self._engine.execution_options(**{_WRITE: True})
        self._postgres = self._engine.dialect.name == "postgresql"
        # an in-memory SQLite database is one connection: it cannot serve two threads at once
        self._scan_parts = 1 if isinstance(self._engine.pool, StaticPool) else _SCAN_PARTS

    @property
    def url(self) -> str:
        """The database URL with any password hidden."""
        return self._engine.url.render_as_string(hide_password=True)

    def __repr__(self) -> str:
        return f"SqlStore({self.url!r})"

    def migrate(self, revision: str = "head") -> None:
        upgrade(self._engine, revision)

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> SqlStore:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _write(self) -> AbstractContextManager[Connection]:
        return self._writer.begin()

    def _insert(self, table: Table) -> sqlite.Insert | postgresql.Insert:
        # Both dialects spell INSERT ... ON CONFLICT the same way; plain `insert` has no ON CONFLICT.
        return postgresql.insert(table) if self._postgres else sqlite.insert(table)

    # --- writes ---

    def save_batch(
        self,
        flows: Sequence[Flow] = (),
        findings: Sequence[Finding] = (),
        proposals: Sequence[Proposal] = (),
    ) -> None:
        # Encode everything before the transaction, so a bad object fails before any SQL runs. Duplicates in
        # one batch are dropped here: PostgreSQL refuses to upsert the same row twice in one statement.
        flow_rows: dict[str, Row] = {}
        for flow in flows:
            if flow.id not in flow_rows:
                flow_rows[flow.id] = _flow_row(flow)
        finding_rows: dict[str, Row] = {}
        for finding in findings:
            if finding.id not in finding_rows:
                finding_rows[finding.id] = _finding_row(finding)
        proposal_rows = {p.id: _proposal_row(p) for p in proposals}  # the last one given wins
        if not (flow_rows or finding_rows or proposal_rows):
            return
        with self._write() as conn:
            if flow_rows:
                insert = self._insert(t.flows).on_conflict_do_nothing(index_elements=["id"])
                conn.execute(insert, list(flow_rows.values()))
            if finding_rows:
                insert = self._insert(t.findings).on_conflict_do_nothing(index_elements=["id"])
                conn.execute(insert, list(finding_rows.values()))
            if proposal_rows:
                self._upsert_proposals(conn, list(proposal_rows.values()))

    def _upsert_proposals(self, conn: Connection, rows: list[Row]) -> None:
        insert = self._insert(t.proposals)
        updated = {c.name: insert.excluded[c.name] for c in t.proposals.columns if c.name != "id"}
        conn.execute(insert.on_conflict_do_update(index_elements=["id"], set_=updated), rows)

    def record_decision(self, decision: Decision, proposal: Proposal) -> None:
        if decision.proposal_id != proposal.id:
            raise ValueError(f"decision {decision.id} is about {decision.proposal_id}, not proposal {proposal.id}")
        proposal_row = _proposal_row(proposal)
        decision_row = _decision_row(decision)
        with self._write() as conn:
            recorded = conn.scalar(select(t.decisions.c.seq).where(t.decisions.c.id == decision.id))
            if recorded is not None:
                # A redelivery: it is on record, and the proposal may have moved on since; change nothing.
                return
            self._upsert_proposals(conn, [proposal_row])
            # ON CONFLICT covers two redeliveries racing past the check above on PostgreSQL.
            conn.execute(self._insert(t.decisions).on_conflict_do_nothing(index_elements=["id"]), decision_row)

    def save_tmr_version(
        self, document: dict[str, Any], *, author: str, comment: str, created_at: datetime
    ) -> TMRVersion:
        created_at = utc(created_at)
        with self._write() as conn:
            if self._postgres:
                # Serialise writers of the next number (SQLite's BEGIN IMMEDIATE already does); readers go on.
                conn.exec_driver_sql("LOCK TABLE tmr_versions IN SHARE ROW EXCLUSIVE MODE")
            number = (conn.scalar(select(func.max(t.tmr_versions.c.version))) or 0) + 1
            conn.execute(
                t.tmr_versions.insert().values(
                    version=number, created_at=created_at, author=author, comment=comment, document=document
                )
            )
        # What a read would give back (JSON types), and not the caller's dict; a JSON round trip of a 10,000-TMR
        # document costs about a third of a deepcopy (bench/nft_apply.py's `record` step).
        return TMRVersion(number, created_at, author, comment, json.loads(json.dumps(document)))

    def record_outcome(self, outcome: Outcome) -> bool:
        row = _outcome_row(outcome)
        with self._write() as conn:
            insert = self._insert(t.outcomes).on_conflict_do_nothing(index_elements=["id"])
            # RETURNING gives a row only when one was inserted (rowcount is not reliable on every driver).
            return conn.execute(insert.returning(t.outcomes.c.seq), row).first() is not None

    def record_trust(self, snapshot: TrustSnapshot) -> None:
        row = _trust_row(snapshot)
        with self._write() as conn:
            insert = self._insert(t.trust_history).on_conflict_do_nothing(index_elements=["recommender", "at"])
            conn.execute(insert, row)

    def save_indicators(self, indicators: Sequence[Indicator], *, at: datetime) -> int:
        # Encoded before the transaction: a bad indicator fails before any SQL runs, and nothing is stored.
        if not self._postgres:
            return self._sqlite_upsert_indicators(_sqlite_indicator_values(indicators, at))
        rows: dict[str, Row] = {}
        for i in indicators:
            row = _indicator_row(i, at)
            rows[row["id"]] = row  # the last one given wins
        if not rows:
            return 0
        with self._write() as conn:
            insert = self._insert(t.indicators)
            updated = {c.name: insert.excluded[c.name] for c in t.indicators.columns if c.name != "id"}
            conn.execute(insert.on_conflict_do_update(index_elements=["id"], set_=updated), list(rows.values()))
        return len(rows)

    def _sqlite_upsert_indicators(self, values: list[tuple[Any, ...]]) -> int:
        # The DB-API's executemany straight: SQLAlchemy's per-row processing was two thirds of storing a million
        # indicators (bench/intel.py). Values are written as SQLAlchemy's SQLite types store them.
        if not values:
            return 0
        raw = self._engine.raw_connection()
        try:
            cursor = raw.cursor()
            try:
                # a bigger page cache for this transaction: a million upserts into four B-trees (id, value, source,
                # valid_until) otherwise re-read the same pages again and again
                cursor.execute(f"PRAGMA cache_size = {_BULK_CACHE_KIB}")
                cursor.execute("BEGIN IMMEDIATE")
                try:
                    self._sqlite_bulk_upsert(cursor, values)
                except BaseException:
                    cursor.execute("ROLLBACK")
                    raise
                cursor.execute("COMMIT")
            finally:
                cursor.execute("PRAGMA cache_size = -2000")  # SQLite's default, for the pooled connection's next user
                cursor.close()
        finally:
            raw.close()
        return len(values)

    @staticmethod
    def _sqlite_bulk_upsert(cursor: Any, values: list[tuple[Any, ...]]) -> None:
        # Inserting into an index in key order costs a fraction of inserting at random places, and value, source
        # and valid_until are random orders of the same rows. So when the batch is big next to the table, the
        # secondary indexes are dropped and built again afterwards (CREATE INDEX sorts), in this same transaction:
        # readers never see the table without them, and a failure rolls the drop back too.
        rebuilt: list[str] = []
        if len(values) >= _BULK_REBUILD_MIN:
            (present,) = cursor.execute("SELECT count(*) FROM indicators").fetchone()
            if len(values) > present:
                indexes = cursor.execute(
                    "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'indicators'"
                    " AND sql IS NOT NULL"  # the primary key's own index has no SQL and stays
                ).fetchall()
                for name, sql in indexes:
                    cursor.execute(f'DROP INDEX "{name}"')
                    rebuilt.append(sql)
        values.sort()  # by id: the primary key's index grows at its end
        cursor.executemany(_SQLITE_UPSERT_INDICATOR, values)
        for sql in rebuilt:
            cursor.execute(sql)

    def expire_indicators(self, at: datetime) -> int:
        c = t.indicators.c
        with self._write() as conn:
            gone = conn.execute(t.indicators.delete().where(or_(c.revoked.is_(True), c.valid_until <= utc(at))))
        return int(gone.rowcount or 0)

    # --- reads ---

    def indicators(
        self, *, at: datetime | None = None, source: str | None = None, updated_since: datetime | None = None
    ) -> list[Indicator]:
        c = t.indicators.c
        query = select(c.data).order_by(c.source, c.id)
        if source is not None:
            query = query.where(c.source == source)
        if updated_since is not None:
            query = query.where(c.updated_at >= utc(updated_since))
        with self._engine.connect() as conn:
            found = [codec.indicator_from_json(data) for data in conn.scalars(query)]
        return found if at is None else [i for i in found if i.is_valid(at)]

    def flows(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        vmn: str | None = None,
        limit: int | None = None,
    ) -> list[Flow]:
        c = t.flows.c
        query = select(c.data).order_by(c.first_seen_at, c.id)
        if since is not None:
            query = query.where(c.first_seen_at >= since)
        if until is not None:
            query = query.where(c.first_seen_at < until)
        if vmn is not None:
            query = query.where(or_(c.src_vmn == vmn, c.dst_vmn == vmn))
        if limit is not None:
            query = query.limit(limit)
        with self._engine.connect() as conn:
            return [codec.flow_from_json(data) for data in conn.scalars(query)]

    def flow_keys(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        candidates: KeyFilter | None = None,
    ) -> Iterator[FlowKeys]:
        if not self._postgres:
            yield from self._sqlite_flow_keys(since, until, candidates)
            return
        # PostgreSQL streams every key: `candidates` is only a hint (its text tests are written for SQLite)
        c = t.flows.c
        query = select(c.id, c.src_ip, c.dst_ip, *(c[name] for name in _KEY_FIELDS))
        if since is not None:
            query = query.where(c.first_seen_at >= since)
        if until is not None:
            query = query.where(c.first_seen_at < until)
        with self._engine.connect() as conn:
            result = conn.execution_options(stream_results=True, yield_per=_KEY_BATCH).execute(query)
            for rows in result.partitions():
                yield from (tuple(row) for row in rows)

    def _sqlite_flow_keys(
        self, since: datetime | None, until: datetime | None, candidates: KeyFilter | None
    ) -> Iterator[FlowKeys]:
        # The DB-API cursor straight: SQLAlchemy's row processing doubled the cost of a scan of millions of rows
        # (bench/intel.py). Times are written as SQLAlchemy's SQLite dialect stores them (naive UTC text).
        if candidates is None:
            yield from self._sqlite_keys_in(_sqlite_window(since, until), None)
            return
        test = _sqlite_key_test(candidates)
        # The test runs in SQLite, which lets go of the GIL while it steps: parts of the window scanned on threads
        # of their own run on as many cores. Few rows pass, so each part is collected whole.
        parts = self._sqlite_window_parts(since, until, self._scan_parts)
        if len(parts) == 1:
            yield from self._sqlite_keys_in(parts[0], test)
            return
        with ThreadPoolExecutor(max_workers=len(parts), thread_name_prefix="vmshadow-scan") as pool:
            for rows in pool.map(lambda part: list(self._sqlite_keys_in(part, test)), parts):
                yield from rows

    def _sqlite_window_parts(
        self, since: datetime | None, until: datetime | None, parts: int
    ) -> list[tuple[list[str], dict[str, Any]]]:
        """[since, until) cut into `parts` windows of equal time between the first and last flow in it (as SQL
        conditions and parameters); one window when there is nothing to cut."""
        where, params = _sqlite_window(since, until)
        if parts < 2:
            return [(where, params)]
        sql = "SELECT min(first_seen_at), max(first_seen_at) FROM flows"
        if where:
            sql += " WHERE " + " AND ".join(where)
        with self._engine.connect() as conn:
            first, last = conn.exec_driver_sql(sql, params).one()
        if first is None or first == last:
            return [(where, params)]
        start, end = (datetime.fromisoformat(v) for v in (first, last))
        cuts = [_sqlite_time((start + (end - start) * n / parts).replace(tzinfo=UTC)) for n in range(1, parts)]
        windows = []
        for n in range(parts):
            part_where, part_params = list(where), dict(params)
            if n > 0:
                part_where.append(f"first_seen_at >= :after_{n}")
                part_params[f"after_{n}"] = cuts[n - 1]
            if n < parts - 1:
                part_where.append(f"first_seen_at < :before_{n}")
                part_params[f"before_{n}"] = cuts[n]
            windows.append((part_where, part_params))
        return windows

    def _sqlite_keys_in(
        self, window: tuple[list[str], dict[str, Any]], test: tuple[str, dict[str, str]] | None
    ) -> Iterator[FlowKeys]:
        where, params = list(window[0]), dict(window[1])
        if test is not None:
            where.append(test[0])
            params.update(test[1])
        sql = f"SELECT id, src_ip, dst_ip, {', '.join(_KEY_FIELDS)} FROM flows"  # noqa: S608 - fixed names only
        if where:
            sql += " WHERE " + " AND ".join(where)
        raw = self._engine.raw_connection()
        try:
            cursor = raw.cursor()
            try:
                cursor.execute(sql, params)
                while rows := cursor.fetchmany(_KEY_BATCH):
                    yield from rows
            finally:
                cursor.close()
            raw.rollback()  # end the read transaction the hooks began
        finally:
            raw.close()

    def flows_by_id(self, ids: Sequence[str]) -> list[Flow]:
        c = t.flows.c
        found: list[Flow] = []
        unique = list(dict.fromkeys(ids))
        with self._engine.connect() as conn:
            for start in range(0, len(unique), 500):  # bounded IN lists (SQLite's variable limit)
                query = select(c.first_seen_at, c.id, c.data).where(c.id.in_(unique[start : start + 500]))
                found.extend(codec.flow_from_json(data) for _, _, data in conn.execute(query))
        return sorted(found, key=lambda f: (f.first_seen_at, f.id))

    def count_flows(self, *, since: datetime | None = None, until: datetime | None = None) -> int:
        c = t.flows.c
        query = select(func.count()).select_from(t.flows)
        if since is not None:
            query = query.where(c.first_seen_at >= since)
        if until is not None:
            query = query.where(c.first_seen_at < until)
        with self._engine.connect() as conn:
            return conn.scalar(query) or 0

    def findings(self, *, since: datetime | None = None) -> list[Finding]:
        c = t.findings.c
        query = select(c.data).order_by(c.observed_at, c.id)
        if since is not None:
            query = query.where(c.observed_at >= since)
        with self._engine.connect() as conn:
            return [codec.finding_from_json(data) for data in conn.scalars(query)]

    def finding_counts(self) -> dict[str, int]:
        c = t.findings.c
        with self._engine.connect() as conn:
            return {
                row.detector: int(row.n)
                for row in conn.execute(select(c.detector, func.count().label("n")).group_by(c.detector))
            }

    def finding(self, finding_id: str) -> Finding | None:
        with self._engine.connect() as conn:
            data = conn.scalar(select(t.findings.c.data).where(t.findings.c.id == finding_id))
        return None if data is None else codec.finding_from_json(data)

    def proposal(self, proposal_id: str) -> Proposal | None:
        with self._engine.connect() as conn:
            data = conn.scalar(select(t.proposals.c.data).where(t.proposals.c.id == proposal_id))
        return None if data is None else codec.proposal_from_json(data)

    def proposals(self, *, state: ProposalState | None = None, since: datetime | None = None) -> list[Proposal]:
        c = t.proposals.c
        query = select(c.data).order_by(c.created_at, c.id)
        if state is not None:
            query = query.where(c.state == str(state))
        if since is not None:
            query = query.where(c.created_at > since)
        with self._engine.connect() as conn:
            return [codec.proposal_from_json(data) for data in conn.scalars(query)]

    def decisions(self, proposal_id: str | None = None) -> list[Decision]:
        c = t.decisions.c
        query = select(t.decisions).order_by(c.seq)
        if proposal_id is not None:
            query = query.where(c.proposal_id == proposal_id)
        with self._engine.connect() as conn:
            return [_decision_of(row) for row in conn.execute(query)]

    def decisions_after(self, seq: int, *, limit: int = 1000) -> list[tuple[int, Decision]]:
        c = t.decisions.c
        query = select(t.decisions).where(c.seq > seq).order_by(c.seq).limit(limit)
        with self._engine.connect() as conn:
            return [(row.seq, _decision_of(row)) for row in conn.execute(query)]

    def outcomes(
        self,
        *,
        recommender: str | None = None,
        proposal_id: str | None = None,
        kind: OutcomeKind | None = None,
        since: datetime | None = None,
    ) -> list[Outcome]:
        c = t.outcomes.c
        query = select(t.outcomes).order_by(c.seq)
        if recommender is not None:
            query = query.where(c.recommender == recommender)
        if proposal_id is not None:
            query = query.where(c.proposal_id == proposal_id)
        if kind is not None:
            query = query.where(c.kind == str(kind))
        if since is not None:
            query = query.where(c.observed_at > since)
        with self._engine.connect() as conn:
            return [_outcome_of(row) for row in conn.execute(query)]

    def outcomes_after(self, seq: int, *, limit: int = 1000) -> list[tuple[int, Outcome]]:
        c = t.outcomes.c
        query = select(t.outcomes).where(c.seq > seq).order_by(c.seq).limit(limit)
        with self._engine.connect() as conn:
            return [(row.seq, _outcome_of(row)) for row in conn.execute(query)]

    def trust_history(self, recommender: str | None = None) -> list[TrustSnapshot]:
        c = t.trust_history.c
        query = select(t.trust_history).order_by(c.at, c.seq)
        if recommender is not None:
            query = query.where(c.recommender == recommender)
        with self._engine.connect() as conn:
            return [
                TrustSnapshot(row.recommender, row.trust, row.alpha, row.beta, row.at, outcomes=row.outcomes)
                for row in conn.execute(query)
            ]

    def tmr_version(self, version: int) -> TMRVersion | None:
        versions = self._tmr_versions(version)
        return versions[0] if versions else None

    def tmr_versions(self) -> list[TMRVersion]:
        return self._tmr_versions(None)

    def _tmr_versions(self, version: int | None) -> list[TMRVersion]:
        c = t.tmr_versions.c
        query = select(t.tmr_versions).order_by(c.version)
        if version is not None:
            query = query.where(c.version == version)
        with self._engine.connect() as conn:
            return [
                TMRVersion(row.version, row.created_at, row.author, row.comment, row.document)
                for row in conn.execute(query)
            ]


# Rows carry UTC times, and so does the JSON form: objects are normalised before they are encoded, so what
# comes back out is UTC whichever zone went in.


def _flow_row(f: Flow) -> Row:
    first, last = utc(f.first_seen_at), utc(f.last_seen_at)
    if first is not f.first_seen_at or last is not f.last_seen_at:
        f = replace(f, first_seen_at=first, last_seen_at=last)
    return {
        "id": f.id,
        "community_id": f.community_id,
        "first_seen_at": first,
        "last_seen_at": last,
        "src_ip": str(f.src_ip),
        "src_port": f.src_port,
        "dst_ip": str(f.dst_ip),
        "dst_port": f.dst_port,
        "protocol": f.protocol,
        "src_vmn": f.src_vmn,
        "dst_vmn": f.dst_vmn,
        "data": codec.flow_to_json(f),
        **{name: getattr(f, name) for name in _KEY_FIELDS},
    }


def _finding_row(f: Finding) -> Row:
    first, observed = utc(f.first_seen_at), utc(f.observed_at)
    if first is not f.first_seen_at or observed is not f.observed_at:
        f = replace(f, first_seen_at=first, observed_at=observed)
    return {
        "id": f.id,
        "kind": str(f.kind),
        "severity": str(f.severity),
        "detector": f.detector,
        "observed_at": observed,
        "data": codec.finding_to_json(f),
    }


def _proposal_row(p: Proposal) -> Row:
    created = utc(p.created_at)
    rule = p.rule
    if rule is not None and rule.expires_at is not None and utc(rule.expires_at) is not rule.expires_at:
        rule = replace(rule, expires_at=utc(rule.expires_at))
    if created is not p.created_at or rule is not p.rule:
        p = replace(p, created_at=created, rule=rule)
    return {
        "id": p.id,
        "kind": str(p.kind),
        "state": str(p.state),
        "recommender": p.recommender,
        "created_at": created,
        "data": codec.proposal_to_json(p),
    }


def _decision_row(d: Decision) -> Row:
    return {
        "id": d.id,
        "proposal_id": d.proposal_id,
        "from_state": str(d.from_state),
        "to_state": str(d.to_state),
        "actor": d.actor,
        "decided_at": utc(d.decided_at),
        "reason": d.reason,
        "before": d.before,
        "after": d.after,
    }


def _outcome_row(o: Outcome) -> Row:
    return {
        "id": o.id,
        "proposal_id": o.proposal_id,
        "recommender": o.recommender,
        "kind": str(o.kind),
        "observed_at": utc(o.observed_at),
        "value": float(o.value),
        "weight": float(o.weight),
        "actor": o.actor,
        "detail": o.detail,
    }


def _indicator_row(i: Indicator, at: datetime) -> Row:
    return {
        "id": codec.indicator_id(i),
        "type": str(i.type),
        "value": i.value,
        "source": i.source,
        "valid_until": utc(i.valid_until) if i.valid_until is not None else None,  # refuse naive times up front
        "revoked": i.revoked,
        "updated_at": utc(at),
        "data": codec.indicator_to_json(i),
    }


def _sqlite_window(since: datetime | None, until: datetime | None) -> tuple[list[str], dict[str, Any]]:
    where, params = [], {}
    if since is not None:
        where.append("first_seen_at >= :since")
        params["since"] = _sqlite_time(since)
    if until is not None:
        where.append("first_seen_at < :until")
        params["until"] = _sqlite_time(until)
    return where, params


# --- the retro-hunt's key test in SQL (`KeyFilter`): string functions only, so SQLite runs it in C per row ---

_LABEL = "abcdefghijklmnopqrstuvwxyz0123456789-_"
_LABEL_ANY_CASE = _LABEL + "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_NAME_END = " ."  # with the ASCII whitespace Python's str.strip() removes (char() in the SQL)
_FINGERPRINT = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_"


def _v6_full(col: str) -> str:
    """An IPv6 address's text with its "::" written out as zero groups (seven colons, or six when the text ends
    with "::": its last group, which no prefix of four groups reaches, is left off). Text starting with "::" is not
    handled (the caller lets it pass)."""
    at = f"instr({col}, '::')"
    zeros = f"substr('0:0:0:0:0:0:0:0:', 1, 2 * (8 + length(replace({col}, ':', '')) - length({col})))"
    return f"(CASE WHEN {at} = 0 THEN {col} ELSE substr({col}, 1, {at}) || {zeros} || substr({col}, {at} + 2) END)"


def _sqlite_key_test(f: KeyFilter) -> tuple[str, dict[str, str]]:
    """A WHERE condition true for every flow whose keys may pass `f` (see `KeyFilter`), and its parameters:
    each set is one JSON array, read by `json_each` once per statement."""
    params: dict[str, str] = {}

    def among(expr: str, name: str, values: frozenset[str]) -> str:
        params[name] = json.dumps(sorted(values))
        return f"{expr} IN (SELECT value FROM json_each(:{name}))"  # noqa: S608 - values are parameters

    # a prefix ends with its separator, so an address is in the network when its text starts with the prefix
    v4 = frozenset(p for level in f.v4_prefixes for p in level)
    v6 = frozenset(p for level in f.v6_prefixes for p in level)

    def prefixed(text: str, prefixes: frozenset[str], family: str) -> str:
        # Cut to the shortest prefix's length, the test is one lookup (SQLite runs a chain of them much slower):
        # an address starting with a listed prefix starts with its cut too; the few others pass to `touching`.
        shortest = min(len(p) for p in prefixes)
        return among(f"substr({text}, 1, {shortest})", f"{family}_prefixes", frozenset(p[:shortest] for p in prefixes))

    hosts4 = frozenset(h for h in f.hosts if ":" not in h)
    hosts6 = f.hosts - hosts4

    def address(col: str) -> str:
        v4_tests = [among(col, "hosts_v4", hosts4)] if hosts4 else []
        if f.any_v4:
            v4_tests = ["1"]
        elif v4:
            v4_tests.append(prefixed(col, v4, "v4"))
        # what the text alone cannot settle passes: a zone, dotted IPv6, text starting with "::" (IPv4-mapped too)
        v6_tests = [f"instr({col}, '%') > 0", f"instr({col}, '.') > 0", f"instr({col}, '::') = 1"]
        if hosts6:
            v6_tests.append(among(col, "hosts_v6", hosts6))
        if f.any_v6:
            v6_tests = ["1"]
        elif v6:
            v6_tests.append(prefixed(_v6_full(col), v6, "v6"))
        return f"(CASE WHEN instr({col}, ':') = 0 THEN {' OR '.join(v4_tests) or '0'} ELSE {' OR '.join(v6_tests)} END)"

    # a name under a listed domain ends with its two last labels; most names stop at the first test, on the last
    # ("" is there for names ending in a character no label has: a dot, a space; the second test trims them)
    tlds = frozenset(n.rpartition(".")[2] for n in f.name_suffixes) | {""}

    def name(col: str) -> str:
        # The index matches the labels of the name stripped of whitespace and trailing dots, lower-cased: a match
        # needs its last two labels to be a listed domain's. Non-ASCII names (IDNs) pass.
        trimmed = f"rtrim({col}, '{_NAME_END}' || char(9, 10, 11, 12, 13, 28, 29, 30, 31))"
        head = f"rtrim({trimmed}, '{_LABEL_ANY_CASE}')"
        last = f"lower(substr({col}, length(rtrim({col}, '{_LABEL_ANY_CASE}')) + 1))"  # untrimmed: cheaper
        last_two = f"lower(substr({trimmed}, length(rtrim(rtrim({head}, '.'), '{_LABEL_ANY_CASE}')) + 1))"
        return (
            f"({col} <> '' AND (length({col}) <> length(CAST({col} AS BLOB))"
            f" OR ({among(last, 'tlds', tlds)} AND {among(last_two, 'names', f.name_suffixes)})))"
        )

    def fingerprint(col: str) -> str:
        # the index compares them stripped and lower-cased: any other character (spaces, non-ASCII) passes
        return (
            f"({col} <> '' AND (rtrim({col}, '{_FINGERPRINT}') <> ''"
            f" OR {among(f'lower({col})', 'fingerprints', f.fingerprints)}))"
        )

    tests = [address("dst_ip"), address("src_ip")]
    if f.name_suffixes:
        tests.extend(name(col) for col in ("dns_query", "sni", "http_host"))
    if f.fingerprints:
        tests.extend(fingerprint(col) for col in ("client_fingerprint", "server_fingerprint"))
    return "(" + " OR ".join(tests) + ")", params


def _sqlite_indicator_values(indicators: Sequence[Indicator], at: datetime) -> list[tuple[Any, ...]]:
    """The `indicators` rows as SQLite stores them, one per id (the last one given wins), in `tables.py` column
    order: what `_indicator_row` and SQLAlchemy's types would write (a contract test compares them), without
    their per-row cost (a million indicators in a bulk load)."""
    updated = _sqlite_time(at)
    sources: dict[str, str] = {}
    rows: dict[str, tuple[Any, ...]] = {}
    blake2b = hashlib.blake2b
    for i in indicators:
        kind, value, source = i.type.value, i.value, i.source
        row_id = "ind-" + blake2b(f"{kind}\x1f{value}\x1f{source}".encode(), digest_size=10).hexdigest()
        until = i.valid_until
        plain = i.valid_from is None and until is None and i.external_id is None
        if plain and not i.labels and not i.kill_chain_phases:
            quoted = sources.get(source)
            if quoted is None:
                quoted = sources[source] = json.dumps(source)
            # json.dumps of `codec.indicator_to_json`, written out for the common case: nothing but the value
            data = (
                f'{{"type": "{kind}", "value": {json.dumps(value)}, "source": {quoted}, '
                f'"confidence": {int(i.confidence)}, "valid_from": null, "valid_until": null, "labels": [], '
                f'"kill_chain_phases": [], "revoked": {"true" if i.revoked else "false"}, "external_id": null}}'
            )
        else:
            data = json.dumps(codec.indicator_to_json(i))
        rows[row_id] = (
            row_id,
            kind,
            value,
            source,
            None if until is None else _sqlite_time(until),  # refuses a naive time, as `utc` does
            1 if i.revoked else 0,
            updated,
            data,
        )
    return list(rows.values())


def _sqlite_time(value: datetime) -> str:
    """A time as SQLAlchemy's SQLite DateTime type stores it (what `UtcDateTime` hands it: naive UTC)."""
    return utc(value).replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")


def _trust_row(s: TrustSnapshot) -> Row:
    return {
        "recommender": s.recommender,
        "at": utc(s.at),
        "trust": float(s.trust),
        "alpha": float(s.alpha),
        "beta": float(s.beta),
        "outcomes": s.outcomes,
    }


def _decision_of(row: Any) -> Decision:
    return Decision(
        id=row.id,
        proposal_id=row.proposal_id,
        from_state=ProposalState(row.from_state),
        to_state=ProposalState(row.to_state),
        actor=row.actor,
        decided_at=row.decided_at,
        reason=row.reason,
        before=row.before,
        after=row.after,
    )


def _outcome_of(row: Any) -> Outcome:
    return Outcome(
        id=row.id,
        proposal_id=row.proposal_id,
        recommender=row.recommender,
        kind=OutcomeKind(row.kind),
        observed_at=row.observed_at,
        value=row.value,
        weight=row.weight,
        actor=row.actor,
        detail=row.detail,
    )
