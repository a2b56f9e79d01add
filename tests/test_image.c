/* Image decoding and the BLIP image processor against transformers' reference
 * (reference/hf/blip2: the PNG, its decoded bytes, Pillow's bicubic bytes and the
 * pixel values), plus every real poster and hand-made broken files. */
#include "test.h"
#include "mllm4rec/image.h"
#include "mllm4rec/safetensors.h"

#include <dirent.h>
#include <jpeglib.h>
#include <png.h>
#include <webp/encode.h>
#include <stdlib.h>
#include <string.h>

TEST(png_matches_reference_bytes_and_pixels) {
    const char *dir = test_shared_path("reference/hf/blip2");
    if (!dir) SKIP("reference/hf/blip2 not found");
    char path[2048];
    mr_error e = {0};
    st_file out;
    snprintf(path, sizeof path, "%s/outputs.safetensors", dir);
    CHECK_OK(st_open(&out, path, &e), &e);
    const st_tensor *rgb = st_find(&out, "proc.rgb_uint8_HWC"), *rs = st_find(&out, "proc.resized_uint8_HWC"),
                    *pv = st_find(&out, "proc.pixel_values");
    CHECK(rgb && rs && pv && rgb->dtype == ST_U8 && rs->dtype == ST_U8);

    mr_image img, resized;
    snprintf(path, sizeof path, "%s/image_40x50.png", dir);
    CHECK_OK(mr_image_load(path, &img, &e), &e);
    CHECK(img.width == 40 && img.height == 50);
    CHECK(rgb->nbytes == 40 * 50 * 3 && !memcmp(img.rgb, rgb->data, rgb->nbytes));

    mr_image_processor proc;
    mr_image_processor_default(&proc, 224);
    snprintf(path, sizeof path, "%s/preprocessor_config.json", dir);
    CHECK_OK(mr_image_processor_load(&proc, path, &e), &e);
    CHECK(proc.width == 32 && proc.height == 32 && proc.resample == MR_RESAMPLE_BICUBIC);
    float pixels[3 * 32 * 32], expect[3 * 32 * 32];
    CHECK_OK(mr_image_to_pixels(&proc, &img, pixels, &resized, &e), &e);
    CHECK(resized.width == 32 && resized.height == 32);
    int bad = 0;
    for (size_t i = 0; i < rs->nbytes; i++) bad += resized.rgb[i] != ((const uint8_t *)rs->data)[i];
    CHECK_MSG(bad == 0, "%d resized bytes differ from Pillow's", bad);
    CHECK_OK(st_read_f32(pv, expect, 3 * 32 * 32, &e), &e);
    double maxd = 0;
    for (int i = 0; i < 3 * 32 * 32; i++) maxd = fmax(maxd, fabs(pixels[i] - expect[i]));
    fprintf(stderr, "  pixel values: max |diff| %.3g\n", maxd);
    CHECK(maxd <= 1e-6);
    mr_image_free(&img);
    mr_image_free(&resized);
    st_close(&out);
}

/* Upscaling, one-dimension-only and same-size resizes keep Pillow's shape rules. */
TEST(resize_shapes_and_constant_image) {
    mr_error e = {0};
    mr_image img = {7, 5, malloc(7 * 5 * 3)}, out;
    memset(img.rgb, 77, 7 * 5 * 3);
    int sizes[][2] = {{7, 5}, {20, 5}, {7, 13}, {3, 2}, {1, 1}, {64, 64}};
    for (int s = 0; s < 6; s++) {
        CHECK_OK(mr_image_resize(&img, sizes[s][0], sizes[s][1], MR_RESAMPLE_BICUBIC, &out, &e), &e);
        CHECK(out.width == sizes[s][0] && out.height == sizes[s][1]);
        /* normalised coefficients keep a constant image constant */
        for (int i = 0; i < out.width * out.height * 3; i++) CHECK(out.rgb[i] == 77);
        mr_image_free(&out);
    }
    CHECK(mr_image_resize(&img, 4, 4, 7, &out, &e) == MR_ERR_INPUT);
    mr_image_free(&img);
}

static void write_jpeg(const char *path, int w, int h, int comps, J_COLOR_SPACE cs, int progressive) {
    struct jpeg_compress_struct c;
    struct jpeg_error_mgr jerr;
    c.err = jpeg_std_error(&jerr);
    jpeg_create_compress(&c);
    FILE *f = fopen(path, "wb");
    jpeg_stdio_dest(&c, f);
    c.image_width = w;
    c.image_height = h;
    c.input_components = comps;
    c.in_color_space = cs;
    jpeg_set_defaults(&c);
    jpeg_set_quality(&c, 95, TRUE);
    if (progressive) jpeg_simple_progression(&c);
    jpeg_start_compress(&c, TRUE);
    uint8_t *row = malloc((size_t)w * comps);
    while (c.next_scanline < c.image_height) {
        for (int x = 0; x < w * comps; x++) row[x] = (uint8_t)(x * 7 + c.next_scanline * 3);
        JSAMPROW r[1] = {row};
        jpeg_write_scanlines(&c, r, 1);
    }
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    fclose(f);
    free(row);
}

static void write_png(const char *path, int w, int h, int depth, int ctype) {
    FILE *f = fopen(path, "wb");
    png_structp p = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(p);
    png_init_io(p, f);
    png_set_IHDR(p, info, w, h, depth, ctype, PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
                 PNG_FILTER_TYPE_DEFAULT);
    if (ctype == PNG_COLOR_TYPE_PALETTE) {
        png_color pal[4] = {{255, 0, 0}, {0, 255, 0}, {0, 0, 255}, {9, 8, 7}};
        png_set_PLTE(p, info, pal, 4);
        png_byte trns[1] = {0};
        png_set_tRNS(p, info, trns, 1, NULL);
    }
    png_write_info(p, info);
    int ch = ctype == PNG_COLOR_TYPE_RGB_ALPHA ? 4 : ctype == PNG_COLOR_TYPE_GRAY_ALPHA ? 2 : ctype == 2 ? 3 : 1;
    size_t rowbytes = ((size_t)w * ch * depth + 7) / 8;
    uint8_t *row = calloc(rowbytes, 1);
    for (int y = 0; y < h; y++) {
        for (size_t i = 0; i < rowbytes; i++) row[i] = (uint8_t)(ctype == PNG_COLOR_TYPE_PALETTE ? (i % 4) * (depth == 8) : i * 5 + y);
        png_write_row(p, row);
    }
    png_write_end(p, NULL);
    png_destroy_write_struct(&p, &info);
    fclose(f);
    free(row);
}

TEST(jpeg_and_png_variants_convert_to_rgb) {
    mr_error e = {0};
    mr_image img;
    const char *p = test_tmp_path("grey.jpg");
    write_jpeg(p, 9, 6, 1, JCS_GRAYSCALE, 0);
    CHECK_OK(mr_image_load(p, &img, &e), &e);
    CHECK(img.width == 9 && img.height == 6);
    for (int i = 0; i < 9 * 6; i++) CHECK(img.rgb[3 * i] == img.rgb[3 * i + 1] && img.rgb[3 * i] == img.rgb[3 * i + 2]);
    mr_image_free(&img);

    p = test_tmp_path("cmyk.jpg");
    write_jpeg(p, 8, 8, 4, JCS_CMYK, 1);
    CHECK_OK(mr_image_load(p, &img, &e), &e);
    CHECK(img.width == 8 && img.height == 8);
    mr_image_free(&img);

    p = test_tmp_path("prog.jpg");
    write_jpeg(p, 33, 17, 3, JCS_RGB, 1);
    CHECK_OK(mr_image_load(p, &img, &e), &e);
    CHECK(img.width == 33 && img.height == 17);
    mr_image_free(&img);

    p = test_tmp_path("pal.png");
    write_png(p, 4, 3, 8, PNG_COLOR_TYPE_PALETTE);
    CHECK_OK(mr_image_load(p, &img, &e), &e);
    CHECK(img.width == 4 && img.height == 3);
    CHECK(img.rgb[0] == 255 && img.rgb[1] == 0 && img.rgb[2] == 0); /* transparent entry keeps its colour */
    CHECK(img.rgb[3] == 0 && img.rgb[4] == 255 && img.rgb[11] == 7);
    mr_image_free(&img);

    p = test_tmp_path("rgba16.png");
    write_png(p, 5, 2, 16, PNG_COLOR_TYPE_RGB_ALPHA);
    CHECK_OK(mr_image_load(p, &img, &e), &e);
    CHECK(img.width == 5 && img.height == 2);
    /* row 0, byte i of the row is i*5; pixel 0 red high byte = byte 0, green = byte 2 */
    CHECK(img.rgb[0] == 0 && img.rgb[1] == 10 && img.rgb[2] == 20 && img.rgb[3] == 40);
    mr_image_free(&img);

    p = test_tmp_path("grey2.png");
    write_png(p, 8, 2, 2, PNG_COLOR_TYPE_GRAY);
    CHECK_OK(mr_image_load(p, &img, &e), &e);
    CHECK(img.width == 8 && img.rgb[0] == 0 && img.rgb[12] == 0 && img.rgb[18] == 85 && img.rgb[21] == 85); /* byte 1 = 0b00000101 */
    mr_image_free(&img);

    p = test_tmp_path("greyalpha.png");
    write_png(p, 3, 3, 8, PNG_COLOR_TYPE_GRAY_ALPHA);
    CHECK_OK(mr_image_load(p, &img, &e), &e);
    CHECK(img.rgb[0] == 0 && img.rgb[3] == 10 && img.rgb[4] == 10 && img.rgb[5] == 10);
    mr_image_free(&img);
}

TEST(broken_files_are_errors) {
    mr_error e = {0};
    mr_image img;
    const char *p = test_tmp_path("prog2.jpg");
    write_jpeg(p, 64, 48, 3, JCS_RGB, 1);
    char *data;
    size_t len;
    CHECK_OK(mr_read_file(p, &data, &len, &e), &e);
    /* every prefix of the file, and some bytes flipped: never a crash */
    int step = test_under_sanitizer() ? 37 : 7;
    for (size_t n = 0; n < len; n += step) {
        int rc = mr_image_decode((const uint8_t *)data, n, "cut.jpg", &img, &e);
        if (rc == MR_OK) mr_image_free(&img);
        CHECK(rc == MR_OK || rc == MR_ERR_INPUT);
        if (n < len / 2) CHECK(rc == MR_ERR_INPUT);
    }
    for (size_t i = 20; i < len; i += step * 3) {
        data[i] ^= 0x5a;
        int rc = mr_image_decode((const uint8_t *)data, len, "flip.jpg", &img, &e);
        if (rc == MR_OK) mr_image_free(&img);
        CHECK(rc == MR_OK || rc == MR_ERR_INPUT);
    }
    free(data);

    p = test_tmp_path("cut.png");
    write_png(p, 40, 40, 8, PNG_COLOR_TYPE_RGB);
    CHECK_OK(mr_read_file(p, &data, &len, &e), &e);
    for (size_t n = 0; n < len - 12; n += step) { /* without IEND the file is always cut */
        int rc = mr_image_decode((const uint8_t *)data, n, "cut.png", &img, &e);
        CHECK(rc == MR_ERR_INPUT);
    }
    CHECK(strstr(e.msg, "cut.png") != NULL);
    free(data);

    CHECK(mr_image_decode((const uint8_t *)"GIF89a......", 12, "x.gif", &img, &e) == MR_ERR_INPUT);
    CHECK(strstr(e.msg, "GIF") != NULL);
    CHECK(mr_image_decode((const uint8_t *)"RIFF\x10\0\0\0WEBPVP8 ", 16, "x.webp", &img, &e) == MR_ERR_INPUT);
    CHECK(mr_image_decode((const uint8_t *)"", 0, "empty", &img, &e) == MR_ERR_INPUT);
    CHECK(mr_image_load(test_tmp_path("does-not-exist.png"), &img, &e) == MR_ERR_INPUT);
}

TEST(webp_lossless_round_trip) {
    int w = 13, h = 7;
    uint8_t rgb[13 * 7 * 3];
    for (int i = 0; i < w * h * 3; i++) rgb[i] = (uint8_t)(i * 37 + 11);
    uint8_t *enc = NULL;
    size_t n = WebPEncodeLosslessRGB(rgb, w, h, w * 3, &enc);
    CHECK(n > 0);
    mr_error e = {0};
    mr_image img, cut;
    int rc = mr_image_decode(enc, n, "x.webp", &img, &e);
    int rc2 = mr_image_decode(enc, n / 2, "cut.webp", &cut, &e); /* cut in half */
    WebPFree(enc);
    CHECK(rc2 == MR_ERR_INPUT);
    CHECK_OK(rc, &e);
    CHECK(img.width == w && img.height == h && !memcmp(img.rgb, rgb, sizeof rgb));
    mr_image_free(&img);
}

/* Every real poster (progressive JPEGs) decodes and preprocesses. */
TEST(all_posters_decode) {
    const char *dir = test_shared_path("data/ml100k-posters/jpg");
    if (!dir) SKIP("data/ml100k-posters/jpg not found");
    DIR *d = opendir(dir);
    CHECK(d != NULL);
    struct dirent *de;
    int n = 0, failed = 0, stride = test_under_sanitizer() ? 50 : 1, seen = 0;
    mr_image_processor proc;
    mr_image_processor_default(&proc, 224);
    float *pixels = malloc(sizeof(float) * 3 * 224 * 224);
    mr_error e = {0};
    while ((de = readdir(d))) {
        if (!strstr(de->d_name, ".jpg")) continue;
        if (seen++ % stride) continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        mr_image img;
        if (mr_image_load(path, &img, &e) != MR_OK) {
            fprintf(stderr, "  %s\n", e.msg);
            failed++;
            continue;
        }
        if (n % 100 == 0 && mr_image_to_pixels(&proc, &img, pixels, NULL, &e) != MR_OK) failed++;
        n++;
        mr_image_free(&img);
    }
    closedir(d);
    free(pixels);
    fprintf(stderr, "  decoded %d posters, %d failed\n", n, failed);
    CHECK(failed == 0);
    CHECK(seen == 1663);
    CHECK(n == (stride == 1 ? 1663 : (1663 + stride - 1) / stride));
}

int main(void) {
    RUN(png_matches_reference_bytes_and_pixels);
    RUN(resize_shapes_and_constant_image);
    RUN(jpeg_and_png_variants_convert_to_rgb);
    RUN(broken_files_are_errors);
    RUN(webp_lossless_round_trip);
    RUN(all_posters_decode);
    return test_summary();
}
