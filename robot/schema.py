"""The database schema as SQLAlchemy Core tables: the single source the migrations follow.

Layout follows DESIGN.md's storage notes: ``codes`` holds every code ever imported
(ciphertext, key id, HMAC fingerprint; never plaintext), ``stock`` is the narrow hot table of
what is still for sale, ``deliveries`` links codes to order lines with the constraints that
make "one code, one order" a database fact. A code's state is derived, never duplicated:

* ``available``  — it has a ``stock`` row;
* ``reserved`` / ``delivered`` / ``review`` / ``defective`` — its ``deliveries`` row's
  ``state`` (``defective``: a buyer reported it bad and it was replaced; it stays linked to
  its order and never returns to stock);
* ``void`` / ``expired`` — ``codes.retired`` (set when it left stock without a delivery).

All timestamps are naive UTC ``DateTime`` columns (every backend stores them the same way);
money is integer cents.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.dialects import mysql

from robot.states import OrderState

# One naming convention so that migrations and models produce the same constraint names on
# every backend (the migration test compares them).
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# Microsecond precision on MySQL/MariaDB too (the audit chain hashes timestamps exactly).
Timestamp = DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")

# 32-byte HMAC fingerprints: VARBINARY on MySQL/MariaDB so the unique index is a real B-tree.
Fingerprint = LargeBinary(32).with_variant(mysql.VARBINARY(32), "mysql", "mariadb")

# BigInteger primary keys that still autoincrement on SQLite (which only does so for INTEGER).
BigId = BigInteger().with_variant(Integer(), "sqlite")

# Order states as plain strings (robot.states names every table's states): the CHECK below.
ORDER_STATES = tuple(s.value for s in OrderState)

pools = Table(
    "pools",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("low_stock", Integer, nullable=True),
    Column("created_at", Timestamp, nullable=False),
    # What the pickup page shows beside the pool's codes (robot.poolpage): how to use them,
    # in Chinese and English, and the redemption link template (``…?code={code}``).
    Column("instructions_zh", Text, nullable=True),
    Column("instructions_en", Text, nullable=True),
    Column("redeem_url", String(500), nullable=True),
    # HMAC of the three above under a key from the key file: a database writer cannot point
    # the redeem button elsewhere (robot.poolpage).
    Column("page_mac", String(64), nullable=True),
)

batches = Table(
    "batches",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("pool_id", Integer, ForeignKey("pools.id"), nullable=False),
    Column("state", String(16), nullable=False),  # importing | active | aborted
    Column("file_name", String(255), nullable=False),
    Column("file_sha256", String(64), nullable=False, index=True),
    Column("supplier", String(128), nullable=True),
    Column("cost_cents", Integer, nullable=True),  # default cost per code for the batch
    Column("code_count", Integer, nullable=False, default=0),
    Column("imported_by", String(64), nullable=False),
    Column("created_at", Timestamp, nullable=False),
    Column("updated_at", Timestamp, nullable=False),
)

# Code ids are reserved in blocks from ``id_blocks`` (robot.pools.reserve_code_ids) before
# the codes are encrypted, because the ciphertext binds its own id; every insert into
# ``codes`` names its id, so the table's own autoincrement is never used.
codes = Table(
    "codes",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("pool_id", Integer, ForeignKey("pools.id"), nullable=False, index=True),
    Column("batch_id", Integer, ForeignKey("batches.id"), nullable=False, index=True),
    Column("source_line", Integer, nullable=False),
    Column("fingerprint", Fingerprint, nullable=False),
    Column("key_id", String(32), nullable=False, index=True),
    Column("ciphertext", LargeBinary, nullable=False),  # 12-byte nonce || AES-GCM ciphertext+tag
    Column("cost_cents", Integer, nullable=True),
    Column("expires_at", Timestamp, nullable=True),
    Column("retired", String(16), nullable=True),  # void | expired
    Column("retired_at", Timestamp, nullable=True),
    Column("created_at", Timestamp, nullable=False),
    # What the ciphertext's associated data binds (robot.vault): NULL = version 1 (pool,
    # fingerprint, key id), 2 = also the code's id. Version 1 rows are re-encrypted to 2 by
    # robot.keys.reencrypt_codes (at start and by `robot keys rotate`).
    Column("aad_version", SmallInteger, nullable=True),
    # 0 for every code. One code is in one row across all pools (the fingerprint has no
    # pool in it); only the extra copies an older version let into several pools carry
    # 1, 2, ... (revision 0003 numbered them and took them off sale).
    Column("dup", SmallInteger, nullable=False, server_default="0"),
    UniqueConstraint("fingerprint", "dup"),
)

# Blocks of ids handed out to importers (name = the table): a guarded UPDATE in its own
# short transaction advances ``last_id``, so concurrent importers on any backend get
# disjoint blocks; a crashed importer leaves a gap, never a reuse.
id_blocks = Table(
    "id_blocks",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("last_id", BigInteger, nullable=False),
)

# What is for sale. ``expires_at`` is NOT NULL (a far-future sentinel for codes that never
# expire) so that "earliest expiry first" is one index walk on every backend.
stock = Table(
    "stock",
    metadata,
    Column("code_id", BigId, ForeignKey("codes.id"), primary_key=True, autoincrement=False),
    Column("pool_id", Integer, nullable=False),
    Column("expires_at", Timestamp, nullable=False),
    Index("ix_stock_claim", "pool_id", "expires_at", "code_id"),
)

orders = Table(
    "orders",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("shop", String(64), nullable=False),
    Column("platform", String(32), nullable=False),
    # Exact, binary comparison on MySQL/MariaDB too: under utf8mb4_unicode_ci full-width
    # digits and zero-width characters would find the row (robot.http.checks).
    Column("platform_order_id", String(64).with_variant(
        mysql.VARCHAR(64, collation="utf8mb4_bin"), "mysql", "mariadb"), nullable=False),
    Column("state", String(16), nullable=False),
    Column("platform_status", String(16), nullable=False),
    Column("reason", Text, nullable=True),  # why held / failed / waiting / cancelled
    Column("buyer_id", String(128), nullable=True),
    Column("buyer_ip", String(64), nullable=True),
    # The buyer's contact where the platform gives one (robot.notify); NULL: none.
    Column("buyer_email", String(254), nullable=True),
    Column("buyer_phone", String(32), nullable=True),
    Column("total_cents", BigInteger, nullable=False, default=0),
    Column("currency", String(8), nullable=False, default="CNY"),
    Column("extra", Text, nullable=False, default="{}"),  # JSON of Order.extra
    Column("paid_at", Timestamp, nullable=True),
    Column("received_at", Timestamp, nullable=False),
    Column("allocated_at", Timestamp, nullable=True),
    Column("shipped_at", Timestamp, nullable=True),
    Column("updated_at", Timestamp, nullable=False),
    Column("due_at", Timestamp, nullable=False),  # when allocation may next be tried
    UniqueConstraint("shop", "platform_order_id"),
    Index("ix_orders_state_due", "state", "due_at", "id"),
    Index("ix_orders_shop_state", "shop", "state"),
    CheckConstraint("state IN (" + ",".join(f"'{s}'" for s in ORDER_STATES) + ")", name="state"),
)

order_lines = Table(
    "order_lines",
    metadata,
    Column("order_id", BigId, ForeignKey("orders.id"), primary_key=True, autoincrement=False),
    Column("line_no", Integer, primary_key=True, autoincrement=False),
    Column("line_id", String(64), nullable=False),
    Column("item_id", String(64), nullable=True),
    Column("sku_id", String(64), nullable=True),
    Column("outer_id", String(128), nullable=True),
    Column("title", String(255), nullable=False, default=""),
    Column("quantity", Integer, nullable=False),
    Column("unit_price_cents", BigInteger, nullable=False, default=0),
    Column("refund", String(16), nullable=False, default="none"),
    # JSON list of [pool_name, codes_per_unit] this line draws from; "[]" = unmapped/ignored
    Column("mapping", Text, nullable=False, default="[]"),
    # JSON of the line's supplier route (robot.sourcing.Supply), NULL: codes from pools only.
    Column("supply", Text, nullable=True),
)

deliveries = Table(
    "deliveries",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("order_id", BigId, ForeignKey("orders.id"), nullable=False),
    Column("line_no", Integer, nullable=False),
    Column("n", Integer, nullable=False),
    Column("code_id", BigId, ForeignKey("codes.id"), nullable=False),
    Column("pool_id", Integer, nullable=False),
    Column("state", String(16), nullable=False),
    Column("seen_at", Timestamp, nullable=True),  # first time a buyer or reveal saw the code
    Column("created_at", Timestamp, nullable=False),
    Column("delivered_at", Timestamp, nullable=True),
    UniqueConstraint("code_id"),
    UniqueConstraint("order_id", "line_no", "n"),
    Index("ix_deliveries_pool_created", "pool_id", "created_at"),
)

outbox = Table(
    "outbox",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("order_id", BigId, ForeignKey("orders.id"), nullable=False),
    Column("kind", String(16), nullable=False),  # ship | memo | notify
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("due_at", Timestamp, nullable=False),
    Column("claimed_by", String(64), nullable=True),
    Column("claimed_until", Timestamp, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("created_at", Timestamp, nullable=False),
    Column("done_at", Timestamp, nullable=True),
    UniqueConstraint("order_id", "kind"),
    Index("ix_outbox_state_due", "state", "due_at"),
)

# Buyer notifications (robot.notify): one row per order, channel and event (``delivered``,
# ``resend-N``), recorded before the send so that an event is sent once; ``state`` walks
# queued -> sending -> sent | failed | unknown (robot.states.NotificationState).
notifications = Table(
    "notifications",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("order_id", BigId, ForeignKey("orders.id"), nullable=False),
    Column("channel", String(16), nullable=False),
    Column("event", String(32), nullable=False),
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("reference", String(128), nullable=True),  # the e-mail's Message-ID, the SMS BizId
    Column("last_error", Text, nullable=True),  # never an address, a number or a code
    Column("actor", String(128), nullable=False),
    Column("created_at", Timestamp, nullable=False),
    Column("sending_at", Timestamp, nullable=True),
    Column("sent_at", Timestamp, nullable=True),
    UniqueConstraint("order_id", "channel", "event"),
)

# One row per write-back attempt that reached an outcome (robot.outbox), for the history
# ``robot orders show`` prints: the outbox row itself keeps only the last error.
outbox_attempts = Table(
    "outbox_attempts",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("outbox_id", BigId, ForeignKey("outbox.id"), nullable=False),
    Column("order_id", BigId, nullable=False),
    Column("kind", String(16), nullable=False),  # ship | memo
    Column("at", Timestamp, nullable=False),
    Column("result", String(16), nullable=False),  # done | retry | failed | cancelled
    Column("error", Text, nullable=True),
    Index("ix_outbox_attempts_order_at", "order_id", "at"),
)

# Replacement codes a person asked for (``robot orders redeliver``) that stock could not cover
# at once: the allocator fulfils them when codes arrive; ``robot status`` shows them waiting.
replacements = Table(
    "replacements",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("order_id", BigId, ForeignKey("orders.id"), nullable=False),
    Column("line_no", Integer, nullable=False),
    Column("pool_id", Integer, ForeignKey("pools.id"), nullable=False),
    Column("count", Integer, nullable=False),
    Column("state", String(16), nullable=False),
    Column("reason", Text, nullable=False),
    Column("actor", String(128), nullable=False),
    Column("defective_code_ids", Text, nullable=False),  # JSON list of the codes replaced
    Column("created_at", Timestamp, nullable=False),
    Column("done_at", Timestamp, nullable=True),
    Index("ix_replacements_state_id", "state", "id"),
    Index("ix_replacements_order_id", "order_id"),
)

# A buyer platform's subscriptions to goods changes (robot.supply; 闲管家's 订阅商品变更通知):
# what was last sent to each, so a change is sent until acknowledged and only once.
supply_subscriptions = Table(
    "supply_subscriptions",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("shop", String(64), nullable=False),
    Column("goods_no", String(64), nullable=False),
    Column("token", String(128), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("notify_url", Text, nullable=False),
    Column("subscribed_at", Timestamp, nullable=False),
    Column("sent_price", BigInteger, nullable=True),  # fen
    Column("sent_stock", Integer, nullable=True),
    Column("sent_on_sale", Boolean, nullable=True),
    Column("sent_at", Timestamp, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("due_at", Timestamp, nullable=False),  # next attempt after a failed one
    UniqueConstraint("shop", "goods_no", "token"),
)

# Failure callbacks owed to a buyer platform (robot.supply): an order it bought that a person
# rejected or cancelled is reported failed (闲管家 订单回调通知, 状态 30) until acknowledged.
supply_callbacks = Table(
    "supply_callbacks",
    metadata,
    Column("order_id", BigId, ForeignKey("orders.id"), primary_key=True, autoincrement=False),
    Column("attempts", Integer, nullable=False),
    Column("sent_at", Timestamp, nullable=True),  # acknowledged
    Column("last_error", Text, nullable=True),
    Column("due_at", Timestamp, nullable=False),
)

# The log is AUDIT_CHAINS hash chains (robot.audit): an entry is (chain, seq).
audit_log = Table(
    "audit_log",
    metadata,
    Column("chain", Integer, primary_key=True, autoincrement=False, server_default="1"),
    Column("seq", BigId, primary_key=True, autoincrement=False),
    Column("at", Timestamp, nullable=False),
    Column("actor", String(128), nullable=False),
    Column("action", String(32), nullable=False),
    Column("subject", String(128), nullable=False),
    Column("details", Text, nullable=False),  # canonical JSON; never plaintext codes
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Index("ix_audit_log_at", "at"),
)

# One row per chain (id = the chain's number): its head. Appending locks one head, which
# orders the appends of that chain across processes without relying on sequence order.
audit_head = Table(
    "audit_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
    # False: the chain still holds the unkeyed SHA-256 hashes of an older version, to be
    # re-sealed (robot.audit.upgrade_legacy); new chains are keyed from their first entry.
    Column("keyed", Boolean, nullable=False, server_default=false()),
)

shop_state = Table(
    "shop_state",
    metadata,
    Column("shop", String(64), primary_key=True),
    Column("poll_cursor", Text, nullable=True),  # JSON from Connector.poll
    Column("refund_cursor", Text, nullable=True),
    Column("last_poll_at", Timestamp, nullable=True),
    Column("last_poll_ok_at", Timestamp, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("paused", Boolean, nullable=False, default=False),
    Column("paused_reason", Text, nullable=True),
    Column("lease_owner", String(128), nullable=True),
    Column("lease_until", Timestamp, nullable=True),
    Column("updated_at", Timestamp, nullable=False),
    # The platform's clock minus ours as last measured (milliseconds), and when (ours).
    Column("clock_offset_ms", BigInteger, nullable=True),
    Column("clock_checked_at", Timestamp, nullable=True),
)

# Encrypted per-shop secrets a connector refreshes itself (access / refresh tokens).
shop_secrets = Table(
    "shop_secrets",
    metadata,
    Column("shop", String(64), primary_key=True),
    Column("name", String(64), primary_key=True),
    Column("key_id", String(32), nullable=False),
    Column("ciphertext", LargeBinary, nullable=False),
    Column("updated_at", Timestamp, nullable=False),
)

# Push messages already applied, for de-duplication by the platform's message id.
push_seen = Table(
    "push_seen",
    metadata,
    Column("shop", String(64), primary_key=True),
    Column("message_id", String(128), primary_key=True),
    Column("received_at", Timestamp, nullable=False),
)

# Pickup links (robot.http.links). The token itself is never stored: it is derived as
# HMAC(key, order id, link id) so it can be rendered again, and only its SHA-256 is kept here
# for the look-up.
pickup_links = Table(
    "pickup_links",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("order_id", BigId, ForeignKey("orders.id"), nullable=False, index=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_at", Timestamp, nullable=False),
    Column("expires_at", Timestamp, nullable=True),  # NULL: never expires
    Column("revoked_at", Timestamp, nullable=True),
)

# Every look at the pickup page: views and reveals, with a keyed hash of the IP (never the IP).
pickup_views = Table(
    "pickup_views",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("link_id", BigId, ForeignKey("pickup_links.id"), nullable=False),
    Column("order_id", BigId, ForeignKey("orders.id"), nullable=False),
    Column("kind", String(16), nullable=False),  # view | reveal
    Column("at", Timestamp, nullable=False),
    Column("ip_hash", String(64), nullable=False),
    Column("user_agent", String(255), nullable=False, default=""),
    Index("ix_pickup_views_order_at", "order_id", "at"),
)

# Purchases from suppliers (robot.sourcing): one row per (order line, unit, attempt), its
# idempotency key committed before the supplier is called. A unit's next attempt (the next
# supplier, a new key) is only written once the previous one failed for certain.
supplier_attempts = Table(
    "supplier_attempts",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("order_id", BigId, ForeignKey("orders.id"), nullable=False),
    Column("line_no", Integer, nullable=False),
    Column("unit", Integer, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("supplier", String(64), nullable=False),  # the robot file's supplier name
    Column("product", String(64), nullable=False),
    Column("kind", String(8), nullable=False),  # topup | card
    Column("key", String(64), nullable=False),
    Column("max_cost_cents", BigInteger, nullable=False),  # per unit
    Column("account", String(128), nullable=True),  # where a top-up goes (shown masked)
    Column("state", String(16), nullable=False),
    Column("supplier_order_id", String(64), nullable=True),
    Column("cost_cents", BigInteger, nullable=True),
    Column("reason", Text, nullable=True),
    Column("created_at", Timestamp, nullable=False),
    Column("updated_at", Timestamp, nullable=False),
    Column("finished_at", Timestamp, nullable=True),
    UniqueConstraint("order_id", "line_no", "unit", "attempt"),
    UniqueConstraint("key"),
    Index("ix_supplier_attempts_state", "state"),
    Index("ix_supplier_attempts_supplier_created_at", "supplier", "created_at"),
)

# Risk blacklists (robot.risk), shared by every shop and platform: ``kind`` is ``buyer`` (a
# platform buyer id, matched on every platform) or ``ip`` (a canonical IP address).
blacklist = Table(
    "blacklist",
    metadata,
    Column("kind", String(8), primary_key=True),
    # Exact, case-sensitive match on MySQL/MariaDB too (buyer ids such as openids are).
    Column("value", String(128).with_variant(mysql.VARCHAR(128, collation="utf8mb4_bin"),
                                             "mysql", "mariadb"), primary_key=True),
    Column("reason", Text, nullable=True),
    Column("created_at", Timestamp, nullable=False),
    Column("created_by", String(128), nullable=False),
    CheckConstraint("kind IN ('buyer','ip')", name="kind"),
)

# What the risk rules count over a window: a buyer's / an IP's recent orders.
Index("ix_orders_buyer_id_received_at", orders.c.buyer_id, orders.c.received_at)
Index("ix_orders_buyer_ip_received_at", orders.c.buyer_ip, orders.c.received_at)
# ``robot orders find``: an order number across every shop.
Index("ix_orders_platform_order_id", orders.c.platform_order_id)

# One row per alert key (robot.alerts): what people were last told about it. ``active`` flips
# only through guarded UPDATEs, so however many processes evaluate alerts, each start and
# each clear is sent once; ``last_sent_at`` rate-limits a flapping condition.
alert_state = Table(
    "alert_state",
    metadata,
    Column("key", String(128), primary_key=True),
    Column("active", Boolean, nullable=False),
    Column("since", Timestamp, nullable=False),
    Column("last_sent_at", Timestamp, nullable=True),
    Column("detail", Text, nullable=True),  # the last message's text; never a code or secret
)

# Automatic restocking (robot.restock): one row per pool that has a rule, holding what the
# guarded UPDATE checks before any purchase is written: purchases in flight, and the money
# reserved or spent in the current local day and month (a new day or month starts from 0).
# Several robot processes reserve through that one UPDATE, so they cannot both spend the
# last of a budget.
restock_state = Table(
    "restock_state",
    metadata,
    Column("pool_id", Integer, ForeignKey("pools.id"), primary_key=True, autoincrement=False),
    Column("in_flight", Integer, nullable=False, server_default="0"),
    Column("day", String(10), nullable=True),  # local date the day figure is for
    Column("day_cents", BigInteger, nullable=False, server_default="0"),
    Column("month", String(7), nullable=True),  # local month the month figure is for
    Column("month_cents", BigInteger, nullable=False, server_default="0"),
    Column("failures", Integer, nullable=False, server_default="0"),  # in a row
    Column("next_at", Timestamp, nullable=True),  # no new purchase before (backoff)
    Column("last_error", Text, nullable=True),
    # Why the rule wants codes and cannot buy now (budget spent, balance low); NULL: it can.
    Column("blocked", Text, nullable=True),
    Column("updated_at", Timestamp, nullable=False),
)

# One purchase of codes for a pool (robot.restock): its own outbox row (due_at, lease) with
# its idempotency key committed before the supplier is called; ``state`` walks
# awaiting_approval -> new -> placing -> accepted/processing/unknown -> succeeded | failed
# (or rejected by a person). ``reserved_cents`` is what the budget holds for it until the
# outcome is known.
restock_purchases = Table(
    "restock_purchases",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("pool_id", Integer, ForeignKey("pools.id"), nullable=False),
    Column("supplier", String(64), nullable=False),
    Column("product", String(64), nullable=False),
    Column("key", String(64), nullable=False),
    Column("quantity", Integer, nullable=False),
    Column("max_unit_cents", BigInteger, nullable=False),
    Column("reserved_cents", BigInteger, nullable=False, server_default="0"),
    Column("day", String(10), nullable=True),  # the budget periods the reservation is in
    Column("month", String(7), nullable=True),
    Column("state", String(24), nullable=False),
    Column("trigger", Text, nullable=False),  # why it was asked for
    Column("requested_by", String(128), nullable=False),
    Column("approved_by", String(128), nullable=True),
    Column("supplier_order_id", String(64), nullable=True),
    Column("cost_cents", BigInteger, nullable=True),
    Column("codes", Integer, nullable=True),  # codes put in stock
    Column("batch_id", Integer, nullable=True),
    Column("reason", Text, nullable=True),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("due_at", Timestamp, nullable=False),
    Column("claimed_by", String(64), nullable=True),
    Column("claimed_until", Timestamp, nullable=True),
    Column("created_at", Timestamp, nullable=False),
    Column("updated_at", Timestamp, nullable=False),
    Column("finished_at", Timestamp, nullable=True),
    UniqueConstraint("key"),
    Index("ix_restock_purchases_state_due", "state", "due_at"),
    Index("ix_restock_purchases_pool_created", "pool_id", "created_at"),
)
