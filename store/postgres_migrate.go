package store

// The schema's statements for PostgreSQL only; migrations in migrate.go
// says which version each belongs to.

// pgFunctions are the PostgreSQL functions behind AddMachine, RequestLease
// and ReleaseLease (migration 3). They do what the SQLite paths in
// sqlite.go do, step for step; the conformance suite holds both to the
// same behaviour.
var pgFunctions = []string{
	// gcefleet_assign gives available machine host to pending lease id.
	`CREATE FUNCTION gcefleet_assign(p_id TEXT, p_dur BIGINT, p_exp BIGINT, p_indef BOOLEAN,
		p_host TEXT, p_backend TEXT, p_body TEXT, p_now BIGINT) RETURNS VOID AS $$
	BEGIN
		UPDATE machines SET state = 'LEASED', lease_id = p_id WHERE hostname = p_host;
		UPDATE leases SET state = 'FULFILLED', hostname = p_host, machine = p_body, fulfilled_at = p_now,
			expires_at = CASE WHEN p_dur > 0 THEN p_now + p_dur WHEN NOT p_indef THEN p_exp ELSE 0 END
			WHERE id = p_id;
		INSERT INTO events (backend, kind, hostname, lease_id, on_reclaim, at)
			VALUES (p_backend, 'leased', p_host, p_id, '', p_now);
	END $$ LANGUAGE plpgsql`,

	// gcefleet_find gives pending lease id the first available machine
	// that has every dimension of p_kv.
	`CREATE FUNCTION gcefleet_find(p_id TEXT, p_dur BIGINT, p_exp BIGINT, p_indef BOOLEAN,
		p_kv TEXT[], p_now BIGINT) RETURNS BOOLEAN AS $$
	DECLARE
		v_host TEXT; v_backend TEXT; v_body TEXT;
	BEGIN
		SELECT hostname, backend, body INTO v_host, v_backend, v_body FROM machines
			WHERE state = 'AVAILABLE' AND kv @> p_kv
			ORDER BY added_at, hostname LIMIT 1 FOR UPDATE SKIP LOCKED;
		IF NOT FOUND THEN
			RETURN FALSE;
		END IF;
		PERFORM gcefleet_assign(p_id, p_dur, p_exp, p_indef, v_host, v_backend, v_body, p_now);
		RETURN TRUE;
	END $$ LANGUAGE plpgsql`,

	// gcefleet_add_machine catalogs a machine and offers it to the oldest
	// pending request it satisfies. o_status is added (o_lease: the lease
	// it went to, if any), same, conflict (o_lease: the body on record) or
	// reclaimed.
	`CREATE FUNCTION gcefleet_add_machine(p_host TEXT, p_backend TEXT, p_body TEXT, p_now BIGINT,
		p_kv TEXT[]) RETURNS TABLE (o_status TEXT, o_lease TEXT) AS $$
	DECLARE
		v_old TEXT; l leases%ROWTYPE;
	BEGIN
		PERFORM pg_advisory_xact_lock_shared(` + matchLock + `);
		SELECT body INTO v_old FROM machines WHERE hostname = p_host;
		IF FOUND THEN
			o_status := CASE WHEN v_old = p_body THEN 'same' ELSE 'conflict' END;
			o_lease := v_old;
			RETURN NEXT;
			RETURN;
		END IF;
		IF EXISTS (SELECT 1 FROM events WHERE hostname = p_host AND kind = 'reclaimed') THEN
			o_status := 'reclaimed';
			RETURN NEXT;
			RETURN;
		END IF;
		INSERT INTO machines (hostname, backend, body, state, added_at, kv) VALUES (p_host, p_backend, p_body, 'AVAILABLE', p_now, p_kv);
		o_status := 'added';
		SELECT * INTO l FROM leases WHERE state = 'PENDING' AND deadline > p_now AND kv <@ p_kv
			ORDER BY created_at, id LIMIT 1 FOR UPDATE SKIP LOCKED;
		IF FOUND THEN
			PERFORM gcefleet_assign(l.id, l.duration_ns, l.expires_at, l.indefinite, p_host, p_backend, p_body, p_now);
			o_lease := l.id;
		END IF;
		RETURN NEXT;
	END $$ LANGUAGE plpgsql`,

	// gcefleet_request_lease records a lease request and fulfils it if a
	// machine matches. It answers with the lease's row, after o_status:
	// new, repeat (the same request again) or reuse (the request id was
	// used for another request, whose body is o_old).
	`CREATE FUNCTION gcefleet_request_lease(p_id TEXT, p_client TEXT, p_request_id TEXT, p_body TEXT,
		p_now BIGINT, p_deadline BIGINT, p_dur BIGINT, p_exp BIGINT, p_indef BOOLEAN, p_kv TEXT[])
		RETURNS TABLE (o_status TEXT, o_old TEXT, ` + pgLeaseTable + `) AS $$
	DECLARE
		v_id TEXT; v_old TEXT; v_status TEXT := 'new'; v_host TEXT; v_backend TEXT; v_body TEXT;
	BEGIN
		SELECT id, body INTO v_id, v_old FROM leases WHERE client = p_client AND request_id = p_request_id;
		IF FOUND THEN
			v_status := CASE WHEN v_old = p_body THEN 'repeat' ELSE 'reuse' END;
		ELSE
			v_id := p_id;
			-- A request fulfilled at once is written once, FULFILLED: a
			-- PENDING version first would leave a dead entry in each index
			-- for every lease, which the next searches wade through.
			SELECT hostname, backend, body INTO v_host, v_backend, v_body FROM machines
				WHERE state = 'AVAILABLE' AND kv @> p_kv
				ORDER BY added_at, hostname LIMIT 1 FOR UPDATE SKIP LOCKED;
			IF FOUND THEN
				INSERT INTO leases (id, client, request_id, body, state, hostname, machine, created_at, deadline,
					duration_ns, expires_at, indefinite, fulfilled_at, kv)
					VALUES (p_id, p_client, p_request_id, p_body, 'FULFILLED', v_host, v_body, p_now, p_deadline,
					p_dur, CASE WHEN p_dur > 0 THEN p_now + p_dur WHEN NOT p_indef THEN p_exp ELSE 0 END, p_indef, p_now, p_kv);
				UPDATE machines SET state = 'LEASED', lease_id = p_id WHERE hostname = v_host;
				INSERT INTO events (backend, kind, hostname, lease_id, on_reclaim, at)
					VALUES (v_backend, 'leased', v_host, p_id, '', p_now);
			ELSE
				INSERT INTO leases (id, client, request_id, body, state, created_at, deadline, duration_ns, expires_at, indefinite, kv)
					VALUES (p_id, p_client, p_request_id, p_body, 'PENDING', p_now, p_deadline, p_dur, p_exp, p_indef, p_kv);
				PERFORM pg_advisory_xact_lock(` + matchLock + `);
				PERFORM gcefleet_find(p_id, p_dur, p_exp, p_indef, p_kv, p_now);
			END IF;
		END IF;
		RETURN QUERY SELECT v_status, v_old, ` + leaseColumns + ` FROM leases WHERE id = v_id;
	END $$ LANGUAGE plpgsql`,

	// gcefleet_release_lease ends client's lease (anyone's for client '')
	// and reclaims its machine. It answers with whether this call ended
	// it and the lease's row; with no row if there is no such lease.
	`CREATE FUNCTION gcefleet_release_lease(p_client TEXT, p_id TEXT, p_now BIGINT)
		RETURNS TABLE (o_ended BOOLEAN, ` + pgLeaseTable + `) AS $$
	DECLARE
		v_owner TEXT; v_state TEXT; v_host TEXT; v_backend TEXT; v_body TEXT; v_ended BOOLEAN := FALSE;
	BEGIN
		SELECT client, state, hostname INTO v_owner, v_state, v_host FROM leases WHERE id = p_id FOR UPDATE;
		IF NOT FOUND OR (p_client <> '' AND v_owner <> p_client) THEN
			RETURN;
		END IF;
		IF v_state IN ('PENDING', 'FULFILLED') THEN
			v_ended := TRUE;
			UPDATE leases SET state = 'RELEASED', ended_at = p_now WHERE id = p_id;
			IF v_host IS NOT NULL THEN
				DELETE FROM machines WHERE hostname = v_host AND lease_id = p_id RETURNING backend, body INTO v_backend, v_body;
				IF FOUND THEN
					INSERT INTO events (backend, kind, hostname, lease_id, on_reclaim, at)
						VALUES (v_backend, 'reclaimed', v_host, p_id, COALESCE(v_body::jsonb -> 'policies' ->> 'on_reclaim', ''), p_now);
				END IF;
			END IF;
		END IF;
		RETURN QUERY SELECT v_ended, ` + leaseColumns + ` FROM leases WHERE id = p_id;
	END $$ LANGUAGE plpgsql`,
}

// queuePostgres keeps the queue's tables (see queueSQLite) on
// PostgreSQL, and has adds match by them and requests count against the
// client's cap. A shape's key is the SHA-256 of its sorted "key=value"
// strings as JSON: a key that long sorted whole could exceed what a
// b-tree entry holds.
var queuePostgres = []string{
	`CREATE FUNCTION gcefleet_shape(p_kv TEXT[]) RETURNS TEXT AS $$
		SELECT encode(sha256(convert_to(array_to_json(ARRAY(SELECT d FROM unnest(p_kv) AS d ORDER BY d))::TEXT, 'UTF8')), 'hex')
	$$ LANGUAGE sql IMMUTABLE`,
	`CREATE FUNCTION gcefleet_queue_in() RETURNS trigger AS $$
	DECLARE
		v_shape TEXT := gcefleet_shape(NEW.kv);
	BEGIN
		INSERT INTO queue (shape, created_at, lease_id, deadline) VALUES (v_shape, NEW.created_at, NEW.id, NEW.deadline);
		INSERT INTO queue_shapes (kv, shape, ndims)
			SELECT d, v_shape, cardinality(NEW.kv) FROM unnest(NEW.kv) AS d
			UNION ALL SELECT '', v_shape, 1 WHERE cardinality(NEW.kv) = 0
			ON CONFLICT DO NOTHING;
		RETURN NULL;
	END $$ LANGUAGE plpgsql`,
	`CREATE FUNCTION gcefleet_queue_out() RETURNS trigger AS $$
	DECLARE
		v_shape TEXT := gcefleet_shape(OLD.kv);
	BEGIN
		DELETE FROM queue WHERE shape = v_shape AND created_at = OLD.created_at AND lease_id = OLD.id;
		IF NOT EXISTS (SELECT 1 FROM queue WHERE shape = v_shape) THEN
			DELETE FROM queue_shapes WHERE kv = ANY(array_append(OLD.kv, '')) AND shape = v_shape;
		END IF;
		RETURN NULL;
	END $$ LANGUAGE plpgsql`,
	`CREATE TRIGGER leases_queue_in AFTER INSERT ON leases FOR EACH ROW WHEN (NEW.state = 'PENDING') EXECUTE FUNCTION gcefleet_queue_in()`,
	`CREATE TRIGGER leases_queue_out AFTER UPDATE OF state ON leases FOR EACH ROW WHEN (OLD.state = 'PENDING' AND NEW.state <> 'PENDING') EXECUTE FUNCTION gcefleet_queue_out()`,
	`CREATE TRIGGER leases_queue_gone AFTER DELETE ON leases FOR EACH ROW WHEN (OLD.state = 'PENDING') EXECUTE FUNCTION gcefleet_queue_out()`,
	// The requests queued before this migration.
	`INSERT INTO queue (shape, created_at, lease_id, deadline)
		SELECT gcefleet_shape(l.kv), l.created_at, l.id, l.deadline FROM leases l WHERE l.state = 'PENDING'`,
	`INSERT INTO queue_shapes (kv, shape, ndims)
		SELECT d, gcefleet_shape(l.kv), cardinality(l.kv) FROM leases l, unnest(l.kv) AS d WHERE l.state = 'PENDING'
		UNION ALL SELECT '', gcefleet_shape(l.kv), 1 FROM leases l WHERE l.state = 'PENDING' AND cardinality(l.kv) = 0
		ON CONFLICT DO NOTHING`,

	// As in migration 3, but the oldest request the machine satisfies is
	// found through the queue's tables: only the queue_shapes rows of the
	// machine's own dimensions are read, and the requests of the shapes
	// it satisfies.
	`CREATE OR REPLACE FUNCTION gcefleet_add_machine(p_host TEXT, p_backend TEXT, p_body TEXT, p_now BIGINT,
		p_kv TEXT[]) RETURNS TABLE (o_status TEXT, o_lease TEXT) AS $$
	DECLARE
		v_old TEXT; v_id TEXT; v_shapes TEXT[]; l leases%ROWTYPE;
	BEGIN
		PERFORM pg_advisory_xact_lock_shared(` + matchLock + `);
		SELECT body INTO v_old FROM machines WHERE hostname = p_host;
		IF FOUND THEN
			o_status := CASE WHEN v_old = p_body THEN 'same' ELSE 'conflict' END;
			o_lease := v_old;
			RETURN NEXT;
			RETURN;
		END IF;
		IF EXISTS (SELECT 1 FROM events WHERE hostname = p_host AND kind = 'reclaimed') THEN
			o_status := 'reclaimed';
			RETURN NEXT;
			RETURN;
		END IF;
		INSERT INTO machines (hostname, backend, body, state, added_at, kv) VALUES (p_host, p_backend, p_body, 'AVAILABLE', p_now, p_kv);
		o_status := 'added';
		-- The shapes it satisfies, then their requests, oldest first: a
		-- query on leases ordered by age, or a join, would walk all
		-- pending requests to find them.
		SELECT array_agg(shape) INTO v_shapes FROM (SELECT shape FROM queue_shapes WHERE kv = ANY(array_append(p_kv, ''))
			GROUP BY shape HAVING COUNT(*) = MIN(ndims)) AS fits;
		IF v_shapes IS NOT NULL THEN
			FOR v_id IN SELECT q.lease_id FROM queue q WHERE q.shape = ANY(v_shapes) AND q.deadline > p_now
				ORDER BY q.created_at, q.lease_id LOOP
				SELECT * INTO l FROM leases WHERE id = v_id AND state = 'PENDING' FOR UPDATE SKIP LOCKED;
				EXIT WHEN FOUND;
			END LOOP;
		END IF;
		IF l.id IS NOT NULL THEN
			PERFORM gcefleet_assign(l.id, l.duration_ns, l.expires_at, l.indefinite, p_host, p_backend, p_body, p_now);
			o_lease := l.id;
		END IF;
		RETURN NEXT;
	END $$ LANGUAGE plpgsql`,

	// As in migration 3, with p_cap: a request that would queue beyond
	// its client's p_cap pending requests is refused (o_status full), and
	// nothing written. (The other, without p_cap, stays for replicas not
	// yet upgraded.)
	`CREATE FUNCTION gcefleet_request_lease(p_id TEXT, p_client TEXT, p_request_id TEXT, p_body TEXT,
		p_now BIGINT, p_deadline BIGINT, p_dur BIGINT, p_exp BIGINT, p_indef BOOLEAN, p_kv TEXT[], p_cap INTEGER)
		RETURNS TABLE (o_status TEXT, o_old TEXT, ` + pgLeaseTable + `) AS $$
	DECLARE
		v_id TEXT; v_old TEXT; v_status TEXT := 'new'; v_host TEXT; v_backend TEXT; v_body TEXT; v_pending INTEGER;
	BEGIN
		SELECT id, body INTO v_id, v_old FROM leases WHERE client = p_client AND request_id = p_request_id;
		IF FOUND THEN
			v_status := CASE WHEN v_old = p_body THEN 'repeat' ELSE 'reuse' END;
		ELSE
			v_id := p_id;
			SELECT hostname, backend, body INTO v_host, v_backend, v_body FROM machines
				WHERE state = 'AVAILABLE' AND kv @> p_kv
				ORDER BY added_at, hostname LIMIT 1 FOR UPDATE SKIP LOCKED;
			IF FOUND THEN
				INSERT INTO leases (id, client, request_id, body, state, hostname, machine, created_at, deadline,
					duration_ns, expires_at, indefinite, fulfilled_at, kv)
					VALUES (p_id, p_client, p_request_id, p_body, 'FULFILLED', v_host, v_body, p_now, p_deadline,
					p_dur, CASE WHEN p_dur > 0 THEN p_now + p_dur WHEN NOT p_indef THEN p_exp ELSE 0 END, p_indef, p_now, p_kv);
				UPDATE machines SET state = 'LEASED', lease_id = p_id WHERE hostname = v_host;
				INSERT INTO events (backend, kind, hostname, lease_id, on_reclaim, at)
					VALUES (v_backend, 'leased', v_host, p_id, '', p_now);
			ELSE
				SELECT COUNT(*) INTO v_pending FROM (SELECT 1 FROM leases WHERE client = p_client AND state = 'PENDING' LIMIT p_cap) AS mine;
				IF v_pending >= p_cap THEN
					RETURN QUERY SELECT 'full'::TEXT, NULL::TEXT, ''::TEXT, ''::TEXT, ''::TEXT, ''::TEXT, ''::TEXT, ''::TEXT, ''::TEXT,
						0::BIGINT, 0::BIGINT, 0::BIGINT, 0::BIGINT, 0::BIGINT;
					RETURN;
				END IF;
				INSERT INTO leases (id, client, request_id, body, state, created_at, deadline, duration_ns, expires_at, indefinite, kv)
					VALUES (p_id, p_client, p_request_id, p_body, 'PENDING', p_now, p_deadline, p_dur, p_exp, p_indef, p_kv);
				PERFORM pg_advisory_xact_lock(` + matchLock + `);
				PERFORM gcefleet_find(p_id, p_dur, p_exp, p_indef, p_kv, p_now);
			END IF;
		END IF;
		RETURN QUERY SELECT v_status, v_old, ` + leaseColumns + ` FROM leases WHERE id = v_id;
	END $$ LANGUAGE plpgsql`,
}

// changesPostgres (migration 10) says in each notification what changed:
// which lease, or that there are new events, so that a replica wakes only
// the long polls that wait for it.
var changesPostgres = []string{
	`CREATE FUNCTION gcefleet_lease_changed() RETURNS trigger AS $$
	BEGIN
		PERFORM pg_notify('` + changesChannel + `', 'lease ' || NEW.id);
		RETURN NULL;
	END $$ LANGUAGE plpgsql`,
	`CREATE FUNCTION gcefleet_events_changed() RETURNS trigger AS $$
	BEGIN
		PERFORM pg_notify('` + changesChannel + `', 'events ' || NEW.backend);
		RETURN NULL;
	END $$ LANGUAGE plpgsql`,
	`DROP TRIGGER leases_changed ON leases`,
	`CREATE TRIGGER leases_changed AFTER UPDATE ON leases FOR EACH ROW EXECUTE FUNCTION gcefleet_lease_changed()`,
	`DROP TRIGGER events_changed ON events`,
	`CREATE TRIGGER events_changed AFTER INSERT ON events FOR EACH ROW EXECUTE FUNCTION gcefleet_events_changed()`,
}

// demandPostgres (migration 11) notifies "demand" when the queue gains
// or loses a request: one notification a transaction, however many rows
// it changed (PostgreSQL folds equal payloads of one transaction).
var demandPostgres = []string{
	`CREATE FUNCTION gcefleet_demand_changed() RETURNS trigger AS $$
	BEGIN
		PERFORM pg_notify('` + changesChannel + `', 'demand');
		RETURN NULL;
	END $$ LANGUAGE plpgsql`,
	`CREATE TRIGGER queue_changed AFTER INSERT OR DELETE ON queue FOR EACH STATEMENT EXECUTE FUNCTION gcefleet_demand_changed()`,
}
