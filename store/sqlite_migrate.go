package store

import "strings"

// The schema's statements for SQLite only; migrations in migrate.go says
// which version each belongs to.

// The queue is indexed by shape, the set of dimensions a request asks
// for (migration 9), so that a new machine finds the requests it
// satisfies without reading those it does not: queue holds each pending
// request under its shape, oldest first, and queue_shapes each shape in
// the queue once a "key=value" of it, ndims its number of them (a shape
// of no dimensions has one row, kv "", which every machine's lookup
// includes). A machine satisfies the shapes all ndims of whose rows are
// among its own, and the oldest request of those shapes gets it. There
// are few shapes (clients ask for a few kinds of machine), so a machine
// reads a row or two for each shape that shares a dimension with it and
// the requests of the shapes it satisfies; none of the others. Triggers
// keep both tables: a request enters with its PENDING lease and leaves
// when the lease leaves that state, on every path.
//
// A shape's key on SQLite is its "key=value" strings sorted, as a JSON
// array.
const sqliteShape = `(SELECT json_group_array(value) FROM (SELECT value FROM json_each({{kv}}) ORDER BY value))`

var queueSQLite = []string{
	`CREATE TRIGGER leases_queue_in AFTER INSERT ON leases WHEN NEW.state = 'PENDING' BEGIN
		INSERT INTO queue (shape, created_at, lease_id, deadline) VALUES (` + shapeOf("NEW.kv") + `, NEW.created_at, NEW.id, NEW.deadline);
		INSERT OR IGNORE INTO queue_shapes (kv, shape, ndims)
			SELECT value, ` + shapeOf("NEW.kv") + `, json_array_length(NEW.kv) FROM json_each(NEW.kv)
			UNION ALL SELECT '', ` + shapeOf("NEW.kv") + `, 1 WHERE json_array_length(NEW.kv) = 0;
	END`,
	`CREATE TRIGGER leases_queue_out AFTER UPDATE OF state ON leases WHEN OLD.state = 'PENDING' AND NEW.state <> 'PENDING' BEGIN` + sqliteDequeue + `END`,
	`CREATE TRIGGER leases_queue_gone AFTER DELETE ON leases WHEN OLD.state = 'PENDING' BEGIN` + sqliteDequeue + `END`,
	// The requests queued before this migration.
	`INSERT INTO queue (shape, created_at, lease_id, deadline)
		SELECT ` + shapeOf("l.kv") + `, l.created_at, l.id, l.deadline FROM leases l WHERE l.state = 'PENDING'`,
	`INSERT OR IGNORE INTO queue_shapes (kv, shape, ndims)
		SELECT j.value, ` + shapeOf("l.kv") + `, json_array_length(l.kv) FROM leases l, json_each(l.kv) j WHERE l.state = 'PENDING'
		UNION ALL SELECT '', ` + shapeOf("l.kv") + `, 1 FROM leases l WHERE l.state = 'PENDING' AND json_array_length(l.kv) = 0`,
}

// sqliteDequeue takes lease OLD out of the queue, and its shape with it
// when it was the last of it.
var sqliteDequeue = `
		DELETE FROM queue WHERE shape = ` + shapeOf("OLD.kv") + ` AND created_at = OLD.created_at AND lease_id = OLD.id;
		DELETE FROM queue_shapes WHERE kv IN (SELECT value FROM json_each(OLD.kv) UNION ALL SELECT '') AND shape = ` + shapeOf("OLD.kv") + `
			AND NOT EXISTS (SELECT 1 FROM queue WHERE shape = ` + shapeOf("OLD.kv") + `);
	`

func shapeOf(kv string) string { return strings.ReplaceAll(sqliteShape, "{{kv}}", kv) }
