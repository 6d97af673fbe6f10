import react from "@vitejs/plugin-react";
import { defineConfig } from "vitest/config";

// base "./": the built app works at "/" or at any sub-path the adapter mounts it on (DASHBOARD_PATH).
export default defineConfig({
  base: "./",
  plugins: [react()],
  build: { outDir: process.env.DASHBOARD_OUT_DIR ?? "dist", emptyOutDir: true, chunkSizeWarningLimit: 1024 },
  server: { proxy: { "/api": "http://127.0.0.1:8080", "/v1": "http://127.0.0.1:8080", "/health": "http://127.0.0.1:8080" } },
  test: { environment: "jsdom", globals: true, include: ["tests/**/*.test.{ts,tsx}"] },
});
