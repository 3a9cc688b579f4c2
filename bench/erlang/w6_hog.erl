%% W6 hog (BEAM peer of bench/w6_hog.cpp): ONE scheduler (bench/run starts
%% erl with +S 1:1). A hog process runs a tight compute loop (integer
%% arithmetic in a tail-recursive function: no allocation, no message
%% operations) for the given time, while two processes ping-pong and record
%% the latency of every round trip (erlang:monotonic_time).
%%
%%   erl +S 1:1 +P 4000000 -noshell -pa DIR -s w6_hog main [Seconds=5]
%%
%% The hog's step is ember's x = x * 31 + 7, kept within 54 bits
%% (band ?MASK) so that every intermediate value stays a small integer: a
%% 64-bit wrap-around would make bignums, i.e. heap allocation. BEAM charges
%% a reduction per function call, so the hog is preempted after its
%% reduction budget; nothing else helps it. The stop flag is an `atomics`
%% slot, set by the driver (the counterpart of ember's main thread) after
%% Seconds, and read once per 1000 steps, as in ember. The driver spawns the
%% hog first, then the pinger (which spawns the ponger); the pinger does not
%% measure until the hog has entered its loop (atomics slot 2). Latencies go
%% into the same histogram as the ember program (exact below 256 ns, then 128
%% buckets per doubling; bench/latency_hist.hpp), kept in a `counters` array
%% so that recording allocates nothing on the pinger's heap.
%%
%% Same RESULT line as ember's (without its runtime counters preemptions and
%% spare_activations), plus runtime=beam; latencies are `nan` when there was
%% no round trip. Fewer than 10,000 round trips is a note on stderr, not a
%% failure.
-module(w6_hog).
-export([main/0, main/1]).

-define(BUCKETS, (256 + 56 * 128)).
-define(MASK, 16#3FFFFFFFFFFFFF).  % 54 bits: x * 31 + 7 < 2^59, a small integer

main() -> main([]).
main(Args) ->
    Seconds = bench_util:arg(Args, 1, 5),
    spawn(fun() -> driver(Seconds) end).

driver(Seconds) ->
    watchdog(max(60, 2 * Seconds + 30)),
    erlang:system_info(schedulers_online) =:= 1 orelse
        io:format(standard_error, "W6: note: ~w schedulers online, W6 wants 1 (erl +S 1:1)~n",
                  [erlang:system_info(schedulers_online)]),
    Me = self(),
    Flags = atomics:new(2, []),  % 1: stop, 2: the hog has started
    Hist = counters:new(?BUCKETS, []),
    {_Hog, HRef} = spawn_monitor(fun() -> hog(Me, Flags) end),
    {_Pinger, PRef} = spawn_monitor(fun() -> pinger(Me, Flags, Hist) end),
    receive after Seconds * 1000 -> ok end,
    atomics:put(Flags, 1, 1),
    {X, Passes} = receive {hog_done, X0, P0} -> {X0, P0} end,
    {N, Max, Stalls} = receive {pinger_done, N0, Max0, S0} -> {N0, Max0, S0} end,
    Answered = receive {ponger_done, A} -> A end,
    Normal = lists:all(fun(Ref) -> receive {'DOWN', Ref, process, _, Reason} -> Reason =:= normal end end,
                       [HRef, PRef]),
    Counts = [counters:get(Hist, I) || I <- lists:seq(1, ?BUCKETS)],
    (Passes >= 1 andalso X =/= 0) orelse
        bench_util:fail("W6: the hog did not run (~w passes, x = ~w)", [Passes, X]),
    Answered =:= N orelse
        bench_util:fail("W6: the ponger answered ~w pings, the pinger made ~w round trips", [Answered, N]),
    lists:sum(Counts) =:= N orelse
        bench_util:fail("W6: the histogram holds ~w samples, expected ~w", [lists:sum(Counts), N]),
    Normal orelse bench_util:fail("W6: a process did not exit normally", []),
    if
        N =:= 0 ->
            io:format(standard_error, "W6: note: 0 round trips: the hog starved the ping-pong~n", []);
        N < 10000 ->
            io:format(standard_error, "W6: note: only ~w round trips, fewer than the 10,000 WORKLOADS.md "
                      "asks of W6's latency figures~n", [N]);
        true -> ok
    end,
    {P50, P99, MaxUs} = case N of
                            0 -> {"nan", "nan", "nan"};
                            _ -> {fmt("~.3f", [bench_util:hist_quantile_ns(Counts, N, 0.5) / 1000]),
                                  fmt("~.3f", [bench_util:hist_quantile_ns(Counts, N, 0.99) / 1000]),
                                  fmt("~.1f", [Max / 1000])}
                        end,
    io:format("RESULT W6 pingpong_p50_us=~s pingpong_p99_us=~s pingpong_max_us=~s roundtrips=~w "
              "stalls_over_1ms=~w hog_iterations=~w runtime=beam~n",
              [P50, P99, MaxUs, N, Stalls, Passes * 1000]),
    bench_util:finish().

fmt(F, A) -> lists:flatten(io_lib:format(F, A)).

%% Prints "RESULT W6 timeout=1 runtime=beam" and halts if still running
%% after Limit seconds.
watchdog(Limit) ->
    spawn(fun() ->
                  receive after Limit * 1000 ->
                          io:format("RESULT W6 timeout=1 runtime=beam~n"),
                          io:format(standard_error, "W6: did not finish within ~w s~n", [Limit]),
                          erlang:halt(2)
                  end
          end).

%% --- the hog ----------------------------------------------------------------------

hog(Driver, Flags) ->
    atomics:put(Flags, 2, 1),
    {X, Passes} = hog_loop(Flags, 1, 0),
    Driver ! {hog_done, X, Passes}.

hog_loop(Flags, X, Passes) ->
    case atomics:get(Flags, 1) of
        0 -> hog_loop(Flags, steps(1000, X), Passes + 1);
        _ -> {X, Passes}
    end.

steps(0, X) -> X;
steps(I, X) -> steps(I - 1, (X * 31 + 7) band ?MASK).

%% --- the ping-pong ------------------------------------------------------------------

pinger(Driver, Flags, Hist) ->
    Me = self(),
    Ponger = spawn(fun() -> bench_util:ponger(Driver) end),
    wait_hog(Flags),
    {N, Max, Stalls} = ping_loop(Ponger, Me, Flags, Hist, 0, 0, 0),
    Ponger ! stop,
    Driver ! {pinger_done, N, Max, Stalls}.

%% Measure only what competes with the hog.
wait_hog(Flags) ->
    case atomics:get(Flags, 2) =:= 1 orelse atomics:get(Flags, 1) =:= 1 of
        true -> ok;
        false -> erlang:yield(), wait_hog(Flags)
    end.

ping_loop(Ponger, Me, Flags, Hist, N, Max, Stalls) ->
    case atomics:get(Flags, 1) of
        0 ->
            T0 = erlang:monotonic_time(nanosecond),
            Ponger ! {ping, Me},
            receive pong -> ok end,
            T1 = erlang:monotonic_time(nanosecond),
            D = T1 - T0,
            counters:add(Hist, bench_util:hist_bucket(D) + 1, 1),
            Stalls1 = case D > 1000000 of true -> Stalls + 1; false -> Stalls end,
            ping_loop(Ponger, Me, Flags, Hist, N + 1, max(Max, D), Stalls1);
        _ ->
            {N, Max, Stalls}
    end.

