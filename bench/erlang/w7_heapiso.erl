%% W7 heapiso (BEAM peer of bench/w7_heapiso.cpp): a garbage process
%% repeatedly builds and drops a ~50 MB structure of many small terms (a map
%% of binaries-as-strings, a list of binaries, a list of {rec, Key, Name}
%% tuples; every binary 16..63 bytes, so a heap binary in the process's own
%% heap), while two other processes ping-pong and record the latency of every
%% round trip (erlang:monotonic_time). The baseline runs first: the same
%% ping-pong for the same time with no garbage process.
%%
%%   erl +P 4000000 -noshell -pa DIR -s w7_heapiso main [Seconds=5] [Megabytes=50]
%%
%% The size of the structure is calibrated on a 20,000-element probe with
%% erts_debug:flat_size (words * wordsize) and checked on the first full
%% build (garbage_mb). BEAM preempts, so nothing is pinned to a scheduler.
%% Latencies go into the same histogram as the ember program (exact below
%% 256 ns, then 128 buckets per doubling; bench/latency_hist.hpp), kept in a
%% `counters` array so that recording allocates nothing on the pinger's heap.
-module(w7_heapiso).
-export([main/0, main/1]).

-define(BUCKETS, (256 + 56 * 128)).
-define(PROBE, 20000).

main() -> main([]).
main(Args) ->
    Seconds = bench_util:arg(Args, 1, 5),
    Megabytes = bench_util:arg(Args, 2, 50),
    spawn(fun() -> driver(Seconds, Megabytes) end).

driver(Seconds, Megabytes) ->
    watchdog(max(60, 2 * Seconds + 30)),
    Target = Megabytes * 1000000,
    Base = phase(false, Seconds, Target),
    Garb = phase(true, Seconds, Target),
    [verify(Name, P) || {Name, P} <- [{"baseline", Base}, {"garbage", Garb}]],
    {Cycles, _Elements, Bytes} = maps:get(garbage, Garb),
    Cycles >= 1 orelse bench_util:fail("W7: the garbage process completed no build/drop cycle", []),
    Bytes >= Target div 10 * 9 orelse
        bench_util:fail("W7: the garbage structure reached ~.1f MB, the target is ~w MB", [Bytes / 1.0e6, Megabytes]),
    io:format("RESULT W7 p50_us=~.3f p99_us=~.3f p999_us=~.3f max_us=~.1f roundtrips=~w "
              "baseline_p50_us=~.3f baseline_p99_us=~.3f baseline_p999_us=~.3f baseline_max_us=~.1f "
              "baseline_roundtrips=~w cycles=~w garbage_mb=~.1f runtime=beam~n",
              [quantile_us(Garb, 0.5), quantile_us(Garb, 0.99), quantile_us(Garb, 0.999),
               maps:get(max, Garb) / 1000, maps:get(n, Garb),
               quantile_us(Base, 0.5), quantile_us(Base, 0.99), quantile_us(Base, 0.999),
               maps:get(max, Base) / 1000, maps:get(n, Base), Cycles, Bytes / 1.0e6]),
    bench_util:finish().

verify(Name, #{n := N, answered := Answered, counts := Counts, normal_exits := Normal}) ->
    N >= 10000 orelse bench_util:fail("W7: ~s phase made ~w round trips, fewer than 10,000", [Name, N]),
    Answered =:= N orelse
        bench_util:fail("W7: ~s phase: the ponger answered ~w pings, the pinger made ~w round trips", [Name, Answered, N]),
    lists:sum(Counts) =:= N orelse
        bench_util:fail("W7: ~s phase: the histogram holds ~w samples, expected ~w", [Name, lists:sum(Counts), N]),
    Normal orelse bench_util:fail("W7: ~s phase: a process did not exit normally", [Name]).

%% Prints "RESULT W7 timeout=1 runtime=beam" and halts if still running
%% after Limit seconds (bench_util:watchdog's, with a limit that grows with
%% the duration asked for).
watchdog(Limit) ->
    spawn(fun() ->
                  receive after Limit * 1000 ->
                          io:format("RESULT W7 timeout=1 runtime=beam~n"),
                          io:format(standard_error, "W7: did not finish within ~w s~n", [Limit]),
                          erlang:halt(2)
                  end
          end).

phase(WithGarbage, Seconds, Target) ->
    Me = self(),
    Hist = counters:new(?BUCKETS, []),
    Garbage = case WithGarbage of
                  true ->
                      {G, GRef} = spawn_monitor(fun() -> garbage_start(Me, Target) end),
                      receive garbage_started -> ok end,
                      {G, GRef};
                  false -> none
              end,
    {_Pinger, PRef} = spawn_monitor(fun() -> pinger(Me, Hist, Seconds) end),
    {N, Max} = receive {pinger_done, N0, Max0} -> {N0, Max0} end,
    Answered = receive {ponger_done, A} -> A end,
    GarbageResult = case Garbage of
                        none -> none;
                        {GPid, _} ->
                            GPid ! stop,
                            receive {garbage_done, Cycles, Elements, Bytes} -> {Cycles, Elements, Bytes} end
                    end,
    Refs = [PRef | case Garbage of none -> []; {_, R} -> [R] end],
    Normal = lists:all(fun(Ref) -> receive {'DOWN', Ref, process, _, Reason} -> Reason =:= normal end end, Refs),
    #{n => N, answered => Answered, max => Max, normal_exits => Normal, garbage => GarbageResult,
      counts => [counters:get(Hist, I) || I <- lists:seq(1, ?BUCKETS)]}.

%% --- the ping-pong ------------------------------------------------------------

pinger(Driver, Hist, Seconds) ->
    Me = self(),
    Ponger = spawn(fun() -> bench_util:ponger(Driver) end),
    Deadline = bench_util:now_ns() + Seconds * 1000000000,
    {N, Max} = ping_loop(Ponger, Me, Hist, Deadline, 0, 0),
    Ponger ! stop,
    Driver ! {pinger_done, N, Max}.

ping_loop(Ponger, Me, Hist, Deadline, N, Max) ->
    T0 = erlang:monotonic_time(nanosecond),
    Ponger ! {ping, Me},
    receive pong -> ok end,
    T1 = erlang:monotonic_time(nanosecond),
    D = T1 - T0,
    counters:add(Hist, bench_util:hist_bucket(D) + 1, 1),
    Max1 = max(Max, D),
    case T1 >= Deadline of
        true -> {N + 1, Max1};
        false -> ping_loop(Ponger, Me, Hist, Deadline, N + 1, Max1)
    end.

quantile_us(#{n := N, counts := Counts}, Q) ->
    bench_util:hist_quantile_ns(Counts, N, Q) / 1000.

%% --- the garbage ----------------------------------------------------------------

garbage_start(Driver, Target) ->
    ProbeBytes = erts_debug:flat_size(build(?PROBE, 0)) * erlang:system_info(wordsize),
    Elements = max(1, Target * ?PROBE div ProbeBytes),
    Driver ! garbage_started,
    garbage_loop(Driver, Elements, 1, 0).

garbage_loop(Driver, Elements, Cycle, MaxBytes) ->
    receive
        stop -> Driver ! {garbage_done, Cycle - 1, Elements, MaxBytes}
    after 0 ->
            {Map, _Log, _Recs} = S = build(Elements, Cycle),
            map_size(Map) > 0 orelse bench_util:fail("W7: empty structure", []),
            Bytes = case Cycle of
                        1 -> erts_debug:flat_size(S) * erlang:system_info(wordsize);
                        _ -> MaxBytes
                    end,
            garbage_loop(Driver, Elements, Cycle + 1, max(MaxBytes, Bytes))
    end.

build(N, Cycle) -> build(N, Cycle, #{}, [], []).

build(0, _Cycle, Map, Log, Recs) -> {Map, Log, Recs};
build(I, Cycle, Map, Log, Recs) ->
    Key = erlang:phash2({Cycle, I}, 1 bsl 32),
    Name = text(Key, 16 + I rem 48),
    Entry = text(Key bsr 8, 20 + (I * 7) rem 40),
    RecName = text(Key bsr 16, 16 + (I * 13) rem 24),
    build(I - 1, Cycle, Map#{Key => Name}, [Entry | Log], [{rec, Key, RecName} | Recs]).

%% A binary of Len bytes (Len =< 64: a heap binary).
text(Seed, Len) ->
    <<($A + (Seed bsr 5) rem 26), (binary:copy(<<($a + Seed rem 26)>>, Len - 1))/binary>>.
