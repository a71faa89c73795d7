/* Seed 002's workload: producer threads "load" image-sized buffers (1-8 MiB)
 * and their text captions, queue them, and a consumer plays them back in
 * frame order, verifying every byte, then frees them.
 * FRAMES (environment) sets the number of frames (default 160). */
#include "common.h"

#include <pthread.h>

enum { PRODUCERS = 4, WINDOW = 12 };

struct frame {
    unsigned char *image;
    size_t size;
    char *caption;
    int ready;
};

static struct frame *frames;
static int n_frames, next_to_play;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t changed = PTHREAD_COND_INITIALIZER;

static size_t image_size(int i) {
    unsigned x = (unsigned)i * 2654435761u;
    return ((size_t)1 << 20) + (x % (7u << 20)); /* 1 to 8 MiB */
}

static char *make_caption(int i) {
    size_t cap = 32;
    char *s = malloc(cap);
    int len = snprintf(s, cap, "frame %d:", i);
    for (int w = 0; w < 5 + i % 20; w++) { /* grow it word by word */
        char word[32];
        int n = snprintf(word, sizeof word, " word%d", w * i);
        if ((size_t)(len + n + 1) > cap) {
            cap *= 2;
            s = realloc(s, cap);
        }
        memcpy(s + len, word, (size_t)n + 1);
        len += n;
    }
    return s;
}

static int caption_ok(const char *s, int i) {
    char *expect = make_caption(i);
    int ok = strcmp(s, expect) == 0;
    free(expect);
    return ok;
}

static void *producer(void *arg) {
    int id = (int)(uintptr_t)arg;
    for (int i = id; i < n_frames; i += PRODUCERS) {
        pthread_mutex_lock(&lock);
        while (i >= next_to_play + WINDOW)
            pthread_cond_wait(&changed, &lock);
        pthread_mutex_unlock(&lock);
        size_t size = image_size(i);
        unsigned char *image = malloc(size);
        if (!image)
            return (void *)1;
        fill(image, size, (unsigned)i);
        char *caption = make_caption(i);
        pthread_mutex_lock(&lock);
        frames[i].image = image;
        frames[i].size = size;
        frames[i].caption = caption;
        frames[i].ready = 1;
        pthread_cond_broadcast(&changed);
        pthread_mutex_unlock(&lock);
    }
    return NULL;
}

int main(void) {
    const char *env = getenv("FRAMES");
    n_frames = env ? atoi(env) : 160;
    frames = calloc((size_t)n_frames, sizeof *frames);
    pthread_t t[PRODUCERS];
    for (uintptr_t i = 0; i < PRODUCERS; i++)
        pthread_create(&t[i], NULL, producer, (void *)i);
    size_t played = 0;
    for (int i = 0; i < n_frames; i++) {
        pthread_mutex_lock(&lock);
        while (!frames[i].ready)
            pthread_cond_wait(&changed, &lock);
        struct frame f = frames[i];
        pthread_mutex_unlock(&lock);
        CHECK(f.size == image_size(i));
        CHECK(holds(f.image, f.size, (unsigned)i));
        CHECK(caption_ok(f.caption, i));
        played += f.size;
        free(f.image);
        free(f.caption);
        pthread_mutex_lock(&lock);
        next_to_play = i + 1;
        pthread_cond_broadcast(&changed);
        pthread_mutex_unlock(&lock);
    }
    for (int i = 0; i < PRODUCERS; i++) {
        void *ret;
        pthread_join(t[i], &ret);
        CHECK(ret == NULL);
    }
    free(frames);
    printf("seed002: played %d frames, %zu MiB, in order\n", n_frames, played >> 20);
    return failures != 0;
}
