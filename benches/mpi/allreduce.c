/* The cost of one all-reduce of the sizes a tinylora data-parallel step sends (1 to 16
 * doubles: the gradient of the default adapter is 13 values), with every rank ready (a barrier
 * before each timed call), on the MPI library the CLI links. Median of 2001 calls.
 *
 *   mpicc -O2 -o /tmp/allreduce benches/mpi/allreduce.c
 *   mpirun -np 2 /tmp/allreduce          (add --allow-run-as-root --oversubscribe as needed)
 */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

int main(int argc, char **argv) {
  MPI_Init(&argc, &argv);
  int rank;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  enum { CALLS = 2001 };
  static double t[CALLS];
  int sizes[] = {1, 4, 13, 16};
  for (int s = 0; s < 4; s++) {
    double send[16] = {0}, recv[16];
    for (int i = 0; i < CALLS; i++) {
      MPI_Barrier(MPI_COMM_WORLD);
      double t0 = MPI_Wtime();
      MPI_Allreduce(send, recv, sizes[s], MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
      t[i] = MPI_Wtime() - t0;
    }
    qsort(t, CALLS, sizeof t[0], cmp);
    if (rank == 0)
      printf("all-reduce of %2d doubles: median %.1f us\n", sizes[s], t[CALLS / 2] * 1e6);
  }
  MPI_Finalize();
  return 0;
}
