-- From here on the publisher deletes a row once the broker has stored its
-- event, so the outbox holds only events still waiting (which the service
-- bounds). Rows an earlier version marked sent go now; sent_at stays NULL
-- for every new row and is kept so that older replicas still run.
DELETE FROM outbox WHERE sent_at IS NOT NULL;
