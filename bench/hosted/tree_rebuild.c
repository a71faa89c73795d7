/* A tree rebuilt every step, in the style of the Barnes-Hut n-body
 * programs of the allocator benchmark suites (barnes): BODIES bodies in
 * the plane; each step builds a quadtree of them (one malloc per node,
 * 96 bytes, and one per leaf list entry, 24 bytes), computes every body's
 * force with the usual opening criterion (theta 0.5), moves the bodies
 * and frees the whole tree. Prints a checksum of the final positions
 * (the arithmetic does not depend on the allocator). The figure is the
 * harness's wall time.
 *
 * usage: tree_rebuild BODIES STEPS */
#include <math.h>

#include "common.h"

typedef struct {
    double x, y, vx, vy, m;
} body_t;

typedef struct entry {
    struct entry *next;
    size_t body;
    size_t pad;
} entry_t;

typedef struct node {
    struct node *child[4];
    double cx, cy, half; /* the square: centre and half side */
    double mx, my, m;    /* centre of mass and mass */
    entry_t *bodies;     /* a leaf's bodies (a list: equal positions) */
} node_t;

static node_t *new_node(double cx, double cy, double half)
{
    node_t *n = check_alloc(malloc(sizeof *n), sizeof *n);
    for (int i = 0; i < 4; i++)
        n->child[i] = NULL;
    n->cx = cx, n->cy = cy, n->half = half;
    n->mx = n->my = n->m = 0;
    n->bodies = NULL;
    return n;
}

static int quadrant(const node_t *n, const body_t *b)
{
    return (b->x >= n->cx) + 2 * (b->y >= n->cy);
}

static node_t *child_of(node_t *n, int q)
{
    if (n->child[q] == NULL) {
        double h = n->half / 2;
        n->child[q] = new_node(n->cx + ((q & 1) ? h : -h), n->cy + ((q & 2) ? h : -h), h);
    }
    return n->child[q];
}

static int is_leaf(const node_t *n)
{
    return !n->child[0] && !n->child[1] && !n->child[2] && !n->child[3];
}

static void insert(node_t *n, const body_t *bodies, size_t i, int depth)
{
    const body_t *b = &bodies[i];
    n->mx += b->x * b->m, n->my += b->y * b->m, n->m += b->m;
    if (is_leaf(n) && (n->bodies == NULL || depth > 40)) {
        entry_t *e = check_alloc(malloc(sizeof *e), sizeof *e);
        e->next = n->bodies, e->body = i;
        n->bodies = e;
        return;
    }
    while (n->bodies != NULL) { /* push the leaf's bodies down */
        entry_t *e = n->bodies;
        n->bodies = e->next;
        size_t j = e->body;
        free(e);
        node_t *c = child_of(n, quadrant(n, &bodies[j]));
        insert(c, bodies, j, depth + 1);
    }
    insert(child_of(n, quadrant(n, b)), bodies, i, depth + 1);
}

static void force(const node_t *n, const body_t *b, double *ax, double *ay)
{
    if (n == NULL || n->m == 0)
        return;
    double mx = n->mx / n->m, my = n->my / n->m;
    double dx = mx - b->x, dy = my - b->y;
    double d2 = dx * dx + dy * dy + 1e-4;
    if (is_leaf(n) || (4 * n->half * n->half) < 0.25 * d2) {
        double inv = n->m / (d2 * sqrt(d2));
        *ax += dx * inv, *ay += dy * inv;
        return;
    }
    for (int q = 0; q < 4; q++)
        force(n->child[q], b, ax, ay);
}

static void free_tree(node_t *n)
{
    if (n == NULL)
        return;
    for (int q = 0; q < 4; q++)
        free_tree(n->child[q]);
    while (n->bodies != NULL) {
        entry_t *e = n->bodies;
        n->bodies = e->next;
        free(e);
    }
    free(n);
}

int main(int argc, char **argv)
{
    size_t count = arg_or(argc, argv, 1, 20000);
    size_t steps = arg_or(argc, argv, 2, 40);
    body_t *bodies = check_alloc(malloc(count * sizeof *bodies), count);
    rng_t rng;
    rng_seed(&rng, 31337);
    for (size_t i = 0; i < count; i++) {
        bodies[i].x = (double)(rng_next(&rng) % 2000001) / 1e6 - 1;
        bodies[i].y = (double)(rng_next(&rng) % 2000001) / 1e6 - 1;
        bodies[i].vx = bodies[i].vy = 0;
        bodies[i].m = 1.0 / (double)count;
    }
    for (size_t s = 0; s < steps; s++) {
        double lo = -1, hi = 1;
        for (size_t i = 0; i < count; i++) {
            lo = fmin(lo, fmin(bodies[i].x, bodies[i].y));
            hi = fmax(hi, fmax(bodies[i].x, bodies[i].y));
        }
        node_t *root = new_node((lo + hi) / 2, (lo + hi) / 2, (hi - lo) / 2 + 1e-9);
        for (size_t i = 0; i < count; i++)
            insert(root, bodies, i, 0);
        for (size_t i = 0; i < count; i++) {
            double ax = 0, ay = 0;
            force(root, &bodies[i], &ax, &ay);
            bodies[i].vx += 1e-5 * ax, bodies[i].vy += 1e-5 * ay;
        }
        for (size_t i = 0; i < count; i++)
            bodies[i].x += 1e-3 * bodies[i].vx, bodies[i].y += 1e-3 * bodies[i].vy;
        free_tree(root);
    }
    double sum = 0;
    for (size_t i = 0; i < count; i++)
        sum += bodies[i].x * 3 + bodies[i].y;
    free(bodies);
    printf("%.9e\n", sum);
    return 0;
}
