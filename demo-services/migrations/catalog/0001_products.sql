-- The products the shop sells, with the stock orders take from.
CREATE TABLE products (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    price       DOUBLE PRECISION NOT NULL CHECK (price > 0),
    description TEXT NOT NULL,
    stock       INTEGER NOT NULL CHECK (stock >= 0)
);

INSERT INTO products (id, name, price, description, stock) VALUES
    ('p1', 'Oyster mushroom grow kit', 24.5, 'Grows on coffee grounds in two weeks.', 25),
    ('p2', 'Shiitake log', 39.0, 'Oak log inoculated with shiitake spawn.', 25),
    ('p3', 'Lion''s mane spray bottle', 19.9, 'Fruits on the kitchen counter.', 25),
    ('p4', 'Mycelium brick', 12.0, 'Packaging grown, not made.', 25),
    ('p5', 'Spore print kit', 8.75, 'Paper, glass and a magnifier.', 25);

-- OrderPlaced events already applied to the stock: an event delivered
-- again (at-least-once delivery) finds its order here and changes nothing.
CREATE TABLE processed_orders (
    order_id     TEXT PRIMARY KEY,
    processed_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
