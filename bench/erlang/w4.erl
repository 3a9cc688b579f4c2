%% W4 skynet (BEAM peer of bench/w4_skynet.cpp): a tree of processes, 10
%% children per node, down to L leaves. Leaf I replies I; every node sums its
%% 10 children's replies and sends the sum to its parent; the driver checks
%% the sum is L*(L-1)/2.
%%
%%   erl +P 4000000 -noshell -s w4 main [L=1000000]
-module(w4).
-export([main/0, main/1]).

main() -> main([]).
main(Args) ->
    L = bench_util:arg(Args, 1, 1000000),
    spawn(fun() -> driver(L) end).

driver(L) ->
    bench_util:watchdog("W4"),
    Me = self(),
    T0 = bench_util:now_ns(),
    spawn(fun() -> node(Me, 0, L) end),
    Sum = receive S when is_integer(S) -> S end,
    T1 = bench_util:now_ns(),
    Expected = L * (L - 1) div 2,
    Sum =:= Expected orelse bench_util:fail("W4: sum ~w, expected ~w", [Sum, Expected]),
    io:format("RESULT W4 ms=~.1f runtime=beam~n", [(T1 - T0) / 1.0e6]),
    bench_util:finish().

node(Parent, Num, 1) ->
    Parent ! Num;
node(Parent, Num, Size) ->
    Sub = Size div 10,
    spawn_children(0, self(), Num, Sub),
    Parent ! collect(10, 0).

spawn_children(10, _Me, _Num, _Sub) -> ok;
spawn_children(I, Me, Num, Sub) ->
    Child = Num + I * Sub,
    spawn(fun() -> node(Me, Child, Sub) end),
    spawn_children(I + 1, Me, Num, Sub).

collect(0, Sum) -> Sum;
collect(K, Sum) ->
    receive V when is_integer(V) -> collect(K - 1, Sum + V) end.
