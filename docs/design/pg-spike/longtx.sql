\timing on
-- a long transaction with an xid stays open (another replica's slow commit) while 50 group
-- commits of 1000 rows land: the poll range starts at its xid
\! psql -Xqd big -c "begin; select pg_current_xact_id(); select pg_sleep(8); commit" > /dev/null &
select pg_sleep(0.5);
\o /dev/null
select format($$insert into buckets(generation, combo, start, width, weighted_sum, denominator, sum_weights, num_nonzero_weights, sum_sq, elements, samples, observations) select g, '[]', 1700000000 + 1438 * 60, 60, 1,1,1,1,1,1,1,1 from generate_series(1, 1000) g on conflict (generation, combo, start, width) do update set weighted_sum = buckets.weighted_sum + 1, xid = pg_current_xact_id()$$) as up \gset
:up;
:up;
:up;
:up;
:up;
:up;
:up;
:up;
:up;
:up;
\o
select pg_current_snapshot() as s0 \gset
:up;
\echo == poll after the 11th commit, while the long transaction is open (s0 = :s0)
explain (analyze, buffers, costs off)
select generation, combo, start, width, weighted_sum from buckets
 where xid >= pg_snapshot_xmin(:'s0') and not pg_visible_in_snapshot(xid, :'s0');
