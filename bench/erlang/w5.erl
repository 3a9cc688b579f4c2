%% W5 fanin (BEAM peer of bench/w5_fanin.cpp): P producers each send the
%% numbers 0..K-1 to one consumer, which counts them to P*K and sums them.
%%
%%   erl -noshell -s w5 main [K=10000] [P=1000]
-module(w5).
-export([main/0, main/1]).

main() -> main([]).
main(Args) ->
    K = bench_util:arg(Args, 1, 10000),
    P = bench_util:arg(Args, 2, 1000),
    spawn(fun() -> driver(K, P) end).

driver(K, P) ->
    bench_util:watchdog("W5"),
    Me = self(),
    Total = P * K,
    Consumer = spawn(fun() -> consume(Total, 0, 0, Me) end),
    T0 = bench_util:now_ns(),
    [spawn(fun() -> produce(Consumer, 0, K) end) || _ <- lists:seq(1, P)],
    {Count, Sum} = receive {tally, C, S} -> {C, S} end,
    T1 = bench_util:now_ns(),
    Expected = P * (K * (K - 1) div 2),
    {Count, Sum} =:= {Total, Expected} orelse
        bench_util:fail("W5: consumer got ~w messages summing to ~w, expected ~w summing to ~w",
                        [Count, Sum, Total, Expected]),
    io:format("RESULT W5 msgs_per_s=~w runtime=beam~n", [round(Total / ((T1 - T0) / 1.0e9))]),
    bench_util:finish().

consume(Total, Total, Sum, Driver) ->
    Driver ! {tally, Total, Sum};
consume(Total, Count, Sum, Driver) ->
    receive V when is_integer(V) -> consume(Total, Count + 1, Sum + V, Driver) end.

produce(_Consumer, K, K) -> ok;
produce(Consumer, I, K) ->
    Consumer ! I,
    produce(Consumer, I + 1, K).
