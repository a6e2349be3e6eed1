-- Orders; the id clients see is 'o' || seq.
CREATE TABLE orders (
    seq       BIGSERIAL PRIMARY KEY,
    product   TEXT NOT NULL,
    quantity  INTEGER NOT NULL CHECK (quantity BETWEEN 1 AND 100),
    user_id   TEXT NOT NULL,
    caller    TEXT,
    placed_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX orders_by_user ON orders (user_id, seq);

-- The transactional outbox: a row per OrderPlaced event, written in the
-- same statement as its order, published to NATS by the outbox publisher
-- and then marked sent.
CREATE TABLE outbox (
    id        BIGSERIAL PRIMARY KEY,
    order_seq BIGINT NOT NULL REFERENCES orders (seq),
    sent_at   TIMESTAMPTZ
);
CREATE INDEX outbox_pending ON outbox (id) WHERE sent_at IS NULL;
