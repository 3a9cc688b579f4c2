%% W1 spawn (BEAM peer of bench/w1_spawn.cpp): a driver spawns N processes
%% that each block in receive; when all are waiting (each bumps an atomic
%% counter just before its receive, the last tells the driver) it reads RSS,
%% then sends each `stop` and waits until they have all exited.
%%
%%   erl +P 4000000 -noshell -s w1 main [N=1000000] [Kind=handler]
%%
%% BEAM has one kind of process; Kind only labels the line with the ember
%% kind it is compared with (bench/run runs it at the n of each kind).
-module(w1).
-export([main/0, main/1]).

main() -> main([]).
main(Args) ->
    N = bench_util:arg(Args, 1, 1000000),
    Kind = case Args of [_, K | _] -> atom_to_list(K); _ -> "handler" end,
    spawn(fun() -> driver(N, Kind) end).

driver(N, Kind) ->
    Tag = io_lib:format("W1 kind=~s n=~w", [Kind, N]),
    bench_util:watchdog(Tag),
    Counters = atomics:new(2, []),  % 1: reached their receive, 2: handled stop
    Me = self(),
    Base = erlang:system_info(process_count),
    RssBefore = bench_util:rss_bytes(),
    T0 = bench_util:now_ns(),
    Pids = spawn_all(N, N, Counters, Me, []),
    receive all_ready -> ok end,
    T1 = bench_util:now_ns(),
    RssAlive = bench_util:rss_bytes(),
    T2 = bench_util:now_ns(),
    [P ! stop || P <- Pids],
    bench_util:wait_process_count(Base),
    T3 = bench_util:now_ns(),
    Ready = atomics:get(Counters, 1),
    Stopped = atomics:get(Counters, 2),
    case {Ready, Stopped} of
        {N, N} -> ok;
        _ -> bench_util:fail("W1: ~w reached their receive, ~w handled stop, expected ~w",
                             [Ready, Stopped, N])
    end,
    io:format("RESULT W1 kind=~s n=~w spawn_us_per_proc=~.3f bytes_per_proc=~w teardown_ms=~.1f runtime=beam~n",
              [Kind, N, (T1 - T0) / 1000 / N, round((RssAlive - RssBefore) / N), (T3 - T2) / 1.0e6]),
    bench_util:finish().

spawn_all(0, _N, _Counters, _Driver, Acc) -> Acc;
spawn_all(I, N, Counters, Driver, Acc) ->
    P = spawn(fun() -> idle(Counters, N, Driver) end),
    spawn_all(I - 1, N, Counters, Driver, [P | Acc]).

idle(Counters, N, Driver) ->
    case atomics:add_get(Counters, 1, 1) of
        N -> Driver ! all_ready;
        _ -> ok
    end,
    receive
        stop -> atomics:add(Counters, 2, 1)
    end.
